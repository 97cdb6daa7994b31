//! Turning kp's interface features on and off (the features themselves
//! are registered with their nodes, in `node`).

use super::barrier::BarrierHeld;
use super::fns;
use core::ffi::CStr;

/// Enables or disables `node` on `arc` for an interface; VPP's error code
/// on failure. Features change only with the workers parked.
fn set(arc: &CStr, node: &CStr, sw_if_index: u32, enable: bool, _: &BarrierHeld) -> Result<(), i32> {
    // SAFETY: exported by libvnet; static names; no feature config data.
    let rv = unsafe {
        fns().vnet_feature_enable_disable(
            arc.as_ptr(),
            node.as_ptr(),
            sw_if_index,
            i32::from(enable),
            core::ptr::null_mut(),
            0,
        )
    };
    if rv == 0 {
        Ok(())
    } else {
        Err(rv)
    }
}

/// Turns NodePort capture on or off for the local addresses of an
/// interface (both families).
pub fn set_nodeport_feature(sw_if_index: u32, enable: bool, held: &BarrierHeld) -> Result<(), i32> {
    set(c"ip4-local", c"kp4-nodeport", sw_if_index, enable, held)?;
    set(c"ip6-local", c"kp6-nodeport", sw_if_index, enable, held)
}

/// Turns the translation of VPP's own ICMP errors on or off for what an
/// interface sends (both families).
pub fn set_icmp_out_feature(sw_if_index: u32, enable: bool, held: &BarrierHeld) -> Result<(), i32> {
    set(c"ip4-output", c"kp4-icmp-out", sw_if_index, enable, held)?;
    set(c"ip6-output", c"kp6-icmp-out", sw_if_index, enable, held)
}

/// Turns reply translation on or off on an interface.
pub fn set_reply_feature(v6: bool, sw_if_index: u32, enable: bool, held: &BarrierHeld) -> Result<(), i32> {
    if v6 {
        set(c"ip6-unicast", c"kp-nat6-in2out", sw_if_index, enable, held)
    } else {
        set(c"ip4-unicast", c"kp-nat4-in2out", sw_if_index, enable, held)
    }
}
