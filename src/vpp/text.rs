//! CLI input and output, and errors, as VPP wants them.

use super::sys;
use std::ffi::CString;

/// Length of a VPP vector (`vec_len`): the u32 just before element 0.
///
/// # Safety
/// `v` is null or points at element 0 of a live VPP vector.
pub unsafe fn vec_len<T>(v: *const T) -> usize {
    if v.is_null() {
        return 0;
    }
    // SAFETY: per the contract, a vector header precedes element 0.
    unsafe { *(v as *const u8).sub(8).cast::<u32>() as usize }
}

/// Takes the rest of the current line from a CLI or config input and
/// consumes it (VPP dispatches whatever is left as the next command).
///
/// # Safety
/// `input` points at a live `unformat_input_t` whose buffer is a VPP vector.
pub unsafe fn take_line(input: *mut sys::unformat_input_t) -> String {
    // SAFETY: per the contract.
    let input = unsafe { &mut *input };
    // SAFETY: the buffer is a VPP vector or null.
    let len = unsafe { vec_len(input.buffer) };
    let start = (input.index as usize).min(len);
    if len == 0 {
        return String::new();
    }
    // SAFETY: `buffer` holds `len` initialised bytes.
    let bytes = unsafe { core::slice::from_raw_parts(input.buffer, len) };
    let rest = &bytes[start..];
    let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
    input.index = (start + (end + 1).min(rest.len())) as sys::uword;
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).expect("no NULs left")
}

/// Prints text on the CLI that issued the command (one call per line so
/// VPP's pager and line handling see ordinary lines).
///
/// # Safety
/// `vm` is the `vlib_main_t` passed to the running CLI handler.
pub unsafe fn cli_output(vm: *mut sys::vlib_main_t, text: &str) {
    for line in text.lines() {
        let l = c_string(line);
        // SAFETY: a fixed "%s" format with one NUL-terminated argument.
        unsafe { (super::fns().vlib_cli_output)(vm, c"%s".as_ptr() as *mut _, l.as_ptr()) };
    }
}

/// A VPP-allocated `clib_error_t` carrying `msg` (VPP prints and frees it).
pub fn error(msg: &str) -> *mut sys::clib_error_t {
    let m = c_string(msg);
    // SAFETY: `_clib_error_return` copies the formatted text into a VPP
    // vector; the format is fixed and the argument NUL-terminated.
    unsafe {
        (super::fns()._clib_error_return)(
            core::ptr::null_mut(),
            0,
            0,
            c"kp".as_ptr(),
            c"%s".as_ptr(),
            m.as_ptr(),
        )
    }
}

/// Resolves an interface name (as `show interface` prints it) to its
/// sw_if_index with VPP's own parser.
pub fn sw_if_index(name: &str) -> Option<u32> {
    let c = c_string(name);
    // SAFETY: `format` returns a fresh VPP vector holding the name; the
    // input record points at it and is parsed by VPP's exported
    // `unformat_vnet_sw_interface` through `unformat_user`, exactly as a
    // CLI handler would; the vector is freed afterwards.
    unsafe {
        let f = super::fns();
        let v = (f.format)(core::ptr::null_mut(), c"%s".as_ptr(), c.as_ptr());
        let mut input = sys::unformat_input_t {
            buffer: v,
            index: 0,
            buffer_marks: core::ptr::null_mut(),
            fill_buffer: core::ptr::null_mut(),
            free: core::ptr::null_mut(),
            fill_buffer_arg: core::ptr::null_mut(),
        };
        let mut sw_if_index: u32 = u32::MAX;
        let ok = (f.unformat_user)(
            &mut input,
            f.unformat_vnet_sw_interface as *mut core::ffi::c_void,
            f.vnet_get_main(),
            &mut sw_if_index as *mut u32,
        );
        let whole = input.index as usize >= vec_len(v);
        f.vec_free_not_inline(v.cast());
        (ok != 0 && whole && sw_if_index != u32::MAX).then_some(sw_if_index)
    }
}

/// The name of an interface, or `None` for an index VPP does not have.
pub fn sw_if_index_name(sw_if_index: u32) -> Option<String> {
    // SAFETY: VPP's formatter prints "DELETED" for unknown indices rather
    // than reading out of bounds; the returned vector is freed here.
    unsafe {
        let f = super::fns();
        let v = (f.format)(
            core::ptr::null_mut(),
            c"%U".as_ptr(),
            f.format_vnet_sw_if_index_name as *const core::ffi::c_void,
            f.vnet_get_main(),
            sw_if_index,
        );
        let len = vec_len(v);
        let name = String::from_utf8_lossy(core::slice::from_raw_parts(v, len)).into_owned();
        f.vec_free_not_inline(v.cast());
        (!name.starts_with("DELETED") && !name.is_empty()).then_some(name)
    }
}

/// The SysV x86_64 `va_list` record behind a C `va_list *`.
#[repr(C)]
pub struct VaList {
    gp_offset: u32,
    fp_offset: u32,
    overflow_arg_area: *mut u64,
    reg_save_area: *mut u8,
}

/// Takes the next integer or pointer argument from a `va_list` (what C's
/// `va_arg(*args, T)` does for 8-byte-or-smaller integer classes), updating
/// it in place so VPP's `format` can go on consuming it.
///
/// # Safety
/// `ap` points at a live `va_list` whose next argument is of integer class.
pub unsafe fn va_arg_u64(ap: *mut VaList) -> u64 {
    // SAFETY: per the contract; this is the ABI's own algorithm.
    unsafe {
        let ap = &mut *ap;
        if ap.gp_offset < 48 {
            let v = ap.reg_save_area.add(ap.gp_offset as usize).cast::<u64>().read_unaligned();
            ap.gp_offset += 8;
            v
        } else {
            let v = ap.overflow_arg_area.read_unaligned();
            ap.overflow_arg_area = ap.overflow_arg_area.add(1);
            v
        }
    }
}

/// Appends `text` to the VPP vector `s` with VPP's `format`.
///
/// # Safety
/// `s` is null or a VPP vector (a format callback's accumulator).
pub unsafe fn format_append(s: *mut u8, text: &str) -> *mut u8 {
    let c = c_string(text);
    // SAFETY: fixed format, NUL-terminated argument.
    unsafe { (super::fns().format)(s, c"%s".as_ptr(), c.as_ptr()) }
}

/// Runs a callback body, turning a panic into a VPP error.
pub fn guarded(f: impl FnOnce() -> Result<(), String>) -> *mut sys::clib_error_t {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => core::ptr::null_mut(),
        Ok(Err(msg)) => error(&msg),
        Err(_) => error("internal error (a bug in kp; the configuration is unchanged)"),
    }
}
