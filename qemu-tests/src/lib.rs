//! qemu-tests: the harness that boots real firmware + pxelinux + kernel + initrd in QEMU.
//!
//! Not built yet: it arrives with the initrd-agent issue. Exports nothing so far.
