//! `airlock`: the host CLI used on the connected machine.

fn main() {
    eprintln!("airlock: not yet implemented");
    std::process::exit(2);
}
