//! PID 1 of the appliance, installed as `/init`.

fn main() {
    eprintln!("airlock-init: not yet implemented");
}
