//! End-to-end harness: QEMU under TCG, serial console, QMP.
