//! Console session steps shared by the end-to-end tests: provisioning at
//! the prompts, login and logout on the serial console.

use crate::qemu::{timeout, Vm, VmError};

/// An account: name, role, passphrase.
pub type Account<'a> = (&'a str, &'a str, &'a str);

/// Types `line` on the serial console.
pub fn send(vm: &mut Vm, line: &str) -> Result<(), VmError> {
    Ok(vm.console().send_line(line)?)
}

/// Waits for `question`, then answers `line`.
pub fn answer(vm: &mut Vm, question: &str, line: &str) -> Result<(), VmError> {
    vm.wait_for(question, timeout(120))?;
    send(vm, line)
}

/// Provisions a fresh appliance with `accounts` and the default key.
pub fn provision(vm: &mut Vm, accounts: &[Account<'_>]) -> Result<(), VmError> {
    send(vm, "provision")?;
    answer(vm, "[ed25519]: ", "")?;
    for (name, role, pass) in accounts {
        answer(vm, "when done): ", name)?;
        answer(vm, "(operator, officer, auditor): ", role)?;
        answer(vm, "not shown): ", pass)?;
        answer(vm, "Repeat the passphrase: ", pass)?;
    }
    answer(vm, "when done): ", "")?;
    answer(vm, "Type yes to go on: ", "yes")?;
    vm.wait_for("Log in with 'login NAME'.", timeout(600))?;
    Ok(())
}

/// Logs `who` in and waits for the session's prompt.
pub fn login(vm: &mut Vm, (name, role, pass): Account<'_>) -> Result<(), VmError> {
    send(vm, &format!("login {name}"))?;
    answer(vm, &format!("Passphrase for {name}: "), pass)?;
    vm.wait_for(format!("logged in as {name} ({role})"), timeout(120))?;
    vm.wait_for(format!("airlock {name}@{role}> "), timeout(30))?;
    Ok(())
}

/// Logs out; the console's answer.
pub fn logout(vm: &mut Vm) -> Result<String, VmError> {
    vm.command("logout")
}
