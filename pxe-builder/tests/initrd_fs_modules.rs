//! The modules restore needs to grow XFS and btrfs mounted (`loop`, `xfs`, `btrfs`) are in
//! the default list and resolve, with their dependencies first, against the Debian cloud
//! kernel the QEMU tests boot (`/lib/modules/*-cloud-amd64`, when installed).

use pxe_builder::initrd::{resolve_modules, Spec, DEFAULT_MODULES};
use std::path::{Path, PathBuf};

#[test]
fn loop_xfs_btrfs_resolve_on_the_debian_cloud_kernel() {
    for m in ["loop", "xfs", "btrfs"] {
        assert!(DEFAULT_MODULES.contains(&m), "{m} not in DEFAULT_MODULES");
    }
    let root = Path::new("/lib/modules");
    let Some(release) = std::fs::read_dir(root).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with("-cloud-amd64") && root.join(n).join("modules.dep").is_file())
            .max()
    }) else {
        eprintln!("skipped: no Debian cloud kernel modules under /lib/modules");
        return;
    };
    let spec = Spec {
        agent: PathBuf::new(),
        kernel_release: release.clone(),
        modules_root: root.to_path_buf(),
        modules: vec!["loop".into(), "xfs".into(), "btrfs".into()],
        optional_modules: vec![],
        tools: vec![],
        busybox: None,
        trusted: vec![],
    };
    let (order, builtin, skipped) = resolve_modules(&spec).unwrap();
    assert!(skipped.is_empty(), "{release}: skipped {skipped:?}");
    let pos = |name: &str| {
        order.iter().position(|f| {
            f.ends_with(&format!("/{name}.ko")) || f.contains(&format!("/{name}.ko."))
        })
    };
    for m in ["loop", "xfs", "btrfs"] {
        assert!(
            pos(m).is_some() || builtin.iter().any(|b| b == m),
            "{release}: {m} missing: {order:?}"
        );
    }
    // Dependencies load first: libcrc32c before xfs and btrfs (Debian 6.1 builds them so).
    if let (Some(crc), Some(x), Some(b)) = (pos("libcrc32c"), pos("xfs"), pos("btrfs")) {
        assert!(crc < x && crc < b, "{order:?}");
    }
}
