//! `csd device start|stop`: a device kept running between commands, whose zone states follow
//! the commands one by one (QEMU's ZNS semantics) until it powers off.

/// See [`tests::running::zone_states_follow_the_commands_until_power_off`].
#[test]
fn zone_states_follow_the_commands_until_power_off() {
    tests::running::zone_states_follow_the_commands_until_power_off(&[]);
}
