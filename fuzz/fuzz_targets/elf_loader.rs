//! The ELF loader on hostile objects: `link` never panics; what it links is a well-formed image
//! that the device's verifier loads or refuses with a typed error.
#![no_main]

use firmware::ebpf::{LoadError, Program};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = host_shell::loader::link(data) else {
        return;
    };
    assert_eq!(
        image.text.len() % 8,
        0,
        "linked text is not whole instructions"
    );
    let bytes = image.to_bytes();
    match Program::load(&bytes) {
        Ok(p) => assert_eq!(p.insn_count() as usize, image.insn_count()),
        // The loader checks the header fields itself: only the verifier may refuse.
        Err(LoadError::Verify(_)) => {}
        Err(e) => panic!("the loader linked an image the device rejects by its header: {e}"),
    }
});
