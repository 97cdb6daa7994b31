//! kp's CLI commands in VPP: their registration, and handlers that hand
//! the line to [`crate::cli`], apply what it parsed and print the answer.
//! Commands are not mp-safe, so VPP runs them with the workers parked.

use super::barrier::BarrierHeld;
use super::feature::set_reply_feature;
use super::reg::Registration;
use super::state::{apply_conf, global, prepare_change, sync_vpp, Global, WorkersView};
use super::sys;
use super::text::{cli_output, guarded, sw_if_index, take_line};
use crate::cli::{self, SetInterface, Show};
use crate::config::FlowChange;
use crate::control::Change;
use crate::packet::IpFamily;
use core::ffi::c_char;
use core::ptr::null_mut;

#[derive(Clone, Copy)]
#[repr(usize)]
enum Cli {
    Conf,
    Vip,
    Pod,
    SetInterface,
    Show,
}

const CLI_TABLE: [(Cli, &core::ffi::CStr, &core::ffi::CStr); 5] = [
    (
        Cli::Conf,
        c"kp conf",
        c"kp conf [buckets <n>] [timeout <s>] [reject on|off] [nat46 prefix <ip6-prefix>] [nat64 source <ip4>[,<ip4>...]|none] [nat64 ports <first>-<last>]",
    ),
    (
        Cli::Vip,
        c"kp vip",
        c"kp vip <prefix> [protocol tcp|udp] port <n> target_port <n> [node_port <n>] [nat44|nat46|nat64|nat66] [new_len <n>] [del]",
    ),
    (
        Cli::Pod,
        c"kp pod",
        c"kp pod <vip-prefix> [protocol tcp|udp] [port <n>] <address> [weight <w>] [<address> [weight <w>]]... [del [flush]]",
    ),
    (Cli::SetInterface, c"kp set interface", c"kp set interface nat4|nat6 in <interface> [del]"),
    (Cli::Show, c"show kp", c"show kp [vip [<prefix>] [verbose]]"),
];

const fn cli_command(path: &core::ffi::CStr, help: &core::ffi::CStr, arg: Cli) -> sys::vlib_cli_command_t {
    sys::vlib_cli_command_t {
        path: path.as_ptr() as *mut c_char,
        short_help: help.as_ptr() as *mut c_char,
        long_help: null_mut(),
        function: Some(kp_cli),
        function_arg: arg as sys::uword,
        is_mp_safe: 0,
        sub_commands: null_mut(),
        sub_command_index_by_name: null_mut(),
        sub_command_positions: null_mut(),
        sub_rule_index_by_name: null_mut(),
        sub_rules: null_mut(),
        next_cli_command: null_mut(),
        hit_counter: 0,
    }
}

static CLI_COMMANDS: [Registration<sys::vlib_cli_command_t>; 5] = [
    Registration::new(cli_command(CLI_TABLE[0].1, CLI_TABLE[0].2, CLI_TABLE[0].0)),
    Registration::new(cli_command(CLI_TABLE[1].1, CLI_TABLE[1].2, CLI_TABLE[1].0)),
    Registration::new(cli_command(CLI_TABLE[2].1, CLI_TABLE[2].2, CLI_TABLE[2].0)),
    Registration::new(cli_command(CLI_TABLE[3].1, CLI_TABLE[3].2, CLI_TABLE[3].0)),
    Registration::new(cli_command(CLI_TABLE[4].1, CLI_TABLE[4].2, CLI_TABLE[4].0)),
];

unsafe extern "C" fn kp_cli(
    vm: *mut sys::vlib_main_t,
    input: *mut sys::unformat_input_t,
    cmd: *mut sys::vlib_cli_command_t,
) -> *mut sys::clib_error_t {
    // SAFETY: VPP passes its live input and the (copied) command record.
    let (line, which) = unsafe { (take_line(input), (*cmd).function_arg) };
    // SAFETY: kp's commands are not mp-safe: VPP runs them on the main
    // thread with the worker barrier held.
    let mut held = unsafe { BarrierHeld::assume() };
    let mut out = String::new();
    let err = guarded(|| {
        let g = global().ok_or("kp is not initialised")?;
        out = run_cli(g, which, &line, &mut held)?;
        Ok(())
    });
    if !out.is_empty() {
        // SAFETY: `vm` is the handler's own vlib_main_t.
        unsafe { cli_output(vm, &out) };
    }
    err
}

fn run_cli(g: &Global, which: sys::uword, line: &str, held: &mut BarrierHeld) -> Result<String, String> {
    let which =
        CLI_TABLE.iter().find(|(c, _, _)| *c as usize == which as usize).ok_or("unknown kp command")?.0;
    let change = match which {
        Cli::Conf => {
            let c = cli::parse_conf_all(line)?;
            let xlat = c.xlat != Default::default();
            if xlat {
                // Checked first, so a refused part changes nothing.
                g.kp.lock().controller.config().clone().set_xlat(&c.xlat).map_err(|e| e.to_string())?;
            }
            if c.flow() != FlowChange::default() {
                apply_conf(g, c.flow(), held)?;
            }
            let mut kp = g.kp.lock();
            if let Some(on) = c.reject {
                kp.apply(&Change::Reject(on))?;
            }
            if xlat {
                let applied = kp.apply(&Change::Xlat(c.xlat))?;
                sync_vpp(&mut kp, &applied, held);
            }
            return Ok(String::new());
        }
        Cli::Vip => cli::parse_vip(line)?,
        Cli::Pod => cli::parse_pod(line)?,
        Cli::SetInterface => {
            let SetInterface { family, interface, enable } = cli::parse_set_interface(line)?;
            let sw_if_index =
                sw_if_index(&interface).ok_or_else(|| format!("unknown interface '{interface}'"))?;
            let mut kp = g.kp.lock();
            kp.set_interface(family, sw_if_index, &interface, enable)?;
            if let Err(rv) = set_reply_feature(family == IpFamily::V6, sw_if_index, enable, held) {
                let _ = kp.set_interface(family, sw_if_index, &interface, !enable);
                return Err(format!("VPP refused the feature on {interface} (error {rv})"));
            }
            return Ok(String::new());
        }
        Cli::Show => {
            let show = cli::parse_show(line)?;
            let mut kp = g.kp.lock();
            let view = WorkersView::new(g, held);
            let out = match show {
                Show::Vips { prefix, verbose } => kp.show_vips(prefix, verbose, &view),
                Show::Kp => kp.show(&view),
            };
            // `show` collects garbage; freed indices restart their counters.
            sync_vpp(&mut kp, &Default::default(), held);
            return Ok(out);
        }
    };
    prepare_change(g, &change, held).map_err(|e| e.to_string())?;
    let mut kp = g.kp.lock();
    let applied = kp.apply(&change)?;
    sync_vpp(&mut kp, &applied, held);
    Ok(String::new())
}

/// Links kp's commands into VPP's CLI (constructor time).
///
/// # Safety
/// Called once, from kp's constructor, inside `dlopen`.
pub unsafe fn register_commands() {
    for cmd in &CLI_COMMANDS {
        // SAFETY: per the contract; the records are static and writable.
        unsafe { super::fns().vlib_cli_command_registration_helper(cmd.get()) };
    }
}
