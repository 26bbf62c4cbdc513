//! Process hardening for a process that holds keys.

use crate::{Error, Result};

/// Makes this process non-dumpable: no core file (RLIMIT_CORE 0 as well, for kernels whose
/// core pattern pipes dumps to a helper), and other processes of the same user cannot ptrace
/// it or read its /proc/PID/mem. For every process that holds keys: the agent, and the CLI
/// while it runs a job.
///
/// # Errors
/// If the kernel refuses.
pub fn harden_process() -> Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| Error(format!("making the process non-dumpable (prctl: {e})")))?;
    let none = rustix::process::Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    rustix::process::setrlimit(rustix::process::Resource::Core, none)
        .map_err(|e| Error(format!("turning core dumps off (setrlimit: {e})")))
}

/// Whether this process is dumpable (for tests and `agent status`).
pub fn process_dumpable() -> bool {
    !matches!(
        rustix::process::dumpable_behavior(),
        Ok(rustix::process::DumpableBehavior::NotDumpable)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_makes_the_process_non_dumpable() {
        // In a child, so the test process itself stays debuggable.
        let exe = std::env::current_exe().expect("exe");
        if std::env::var_os("VMCRYPT_HARDEN_CHILD").is_some() {
            harden_process().expect("prctl");
            assert!(!process_dumpable());
            return;
        }
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "process::tests::hardening_makes_the_process_non_dumpable",
                "--nocapture",
            ])
            .env("VMCRYPT_HARDEN_CHILD", "1")
            .output()
            .expect("run child");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
}
