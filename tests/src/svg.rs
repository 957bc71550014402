//! Checking SVG pictures `csd` draws: python3's XML parser (`xml.etree`) reads the file, so a
//! picture that is not well-formed XML fails the test, and it reports what the tests assert on.

use std::{path::Path, process::Command};

/// The SVG file at `path`, parsed by python3's `xml.etree`: `{"root": the root element's tag,
/// "zones": the `data-zone` of every `<rect class="zone">` in document order, "legend": the
/// text of the `<g id="legend">` elements}`.
///
/// # Panics
/// If python3 cannot run or the file is not well-formed XML (the parser's error is shown).
pub fn zone_map_summary(path: &Path) -> serde_json::Value {
    const PROGRAM: &str = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
print(json.dumps({
    "root": root.tag,
    "zones": [int(r.get("data-zone")) for r in root.iter(ns + "rect") if r.get("class") == "zone"],
    "legend": [" ".join(g.itertext()) for g in root.iter(ns + "g") if g.get("id") == "legend"],
}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(PROGRAM)
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} is not well-formed SVG: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    crate::json(&out.stdout)
}
