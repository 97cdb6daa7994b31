//! Prints the vppapigen-style JSON of an .api file with kp's generator:
//! `kp-apigen kp.api > kp.api.json` (imports resolved under vpp-headers/api).

use kp_plugin::apigen::Api;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "kp.api".into());
    let include = args.next().unwrap_or_else(|| "vpp-headers/api".into());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let module = std::path::Path::new(&path).file_stem().and_then(|s| s.to_str()).unwrap_or("kp").to_string();
    let resolve = |p: &str| std::fs::read_to_string(format!("{include}/{p}")).ok();
    match Api::parse(&module, &text, &resolve) {
        Ok(api) => print!("{}", api.to_json()),
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
}
