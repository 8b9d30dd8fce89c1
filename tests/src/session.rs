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

/// The accounts of the shared provisioned disk ([`provisioned_disk`]).
pub const OPERATOR: Account<'static> = ("olga", "operator", "olga operates the appliance 1");
pub const OFFICER: Account<'static> = ("otto", "officer", "otto is the update officer 2");
pub const AUDITOR: Account<'static> = ("anna", "auditor", "anna audits what happened 3");

/// A test's own copy of out/airlock.img provisioned with [`OPERATOR`],
/// [`OFFICER`] and [`AUDITOR`]. The provisioned image is made once per
/// built image (keyed by its size and modification time, under a file
/// lock so parallel tests wait for one provisioning) and copied per test.
pub fn provisioned_disk(name: &str) -> Result<crate::DiskCopy, String> {
    use crate::{Artifacts, DiskCopy, VmConfig};
    use std::os::unix::fs::MetadataExt;
    let image = Artifacts::locate()
        .disk_image()
        .map_err(|e| e.to_string())?;
    let meta = std::fs::metadata(&image).map_err(|e| format!("{}: {e}", image.display()))?;
    let dir = std::env::temp_dir().join("airlock-e2e").join("disks");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cache = dir.join(format!("provisioned-{}-{}.img", meta.len(), meta.mtime()));
    let lock_path = cache.with_extension("lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    if !cache.exists() {
        let fresh = DiskCopy::new(&image, "provisioning").map_err(|e| e.to_string())?;
        let cfg = VmConfig::direct("provisioning", &Artifacts::locate())
            .map_err(|e| e.to_string())?
            .with_writable_disk(fresh.path());
        let mut vm = Vm::boot(&cfg, timeout(240)).map_err(|e| e.to_string())?;
        provision(&mut vm, &[OPERATOR, OFFICER, AUDITOR]).map_err(|e| e.to_string())?;
        send(&mut vm, "poweroff").map_err(|e| e.to_string())?;
        vm.wait_exit(timeout(120)).map_err(|e| e.to_string())?;
        drop(vm);
        let part = cache.with_extension("partial");
        crate::disk::copy_sparse(fresh.path(), &part).map_err(|e| e.to_string())?;
        std::fs::rename(&part, &cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    }
    let copy = DiskCopy::new(&cache, name).map_err(|e| e.to_string());
    drop(lock);
    copy
}
