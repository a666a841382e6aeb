//! Network backup end to end (issue 15): a node whose NVMe disk is the fixture master is
//! marked with `pxe-builder backup`, PXE-boots (SeaBIOS + iPXE ROM → real pxelinux → the
//! agent as PID 1) in backup mode, captures its disk and uploads it to `imgtool serve`
//! with its one-time token; the published version's id equals a local `imgtool capture`
//! of the same disk file. The mark is cleared, and a blank node PXE-clones the published
//! image; its disk compares equal to the master (tables, UUIDs, trees, `e2fsck -fn`).

use qemu_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use test_fixtures::disk::{assert_restored, fixture};
use test_fixtures::image::capture_into;
use test_fixtures::skip_unless_root;

/// pxe_clone.rs's bound for one boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
const MAC: &str = "52:54:00:00:00:31";

/// `imgtool serve` of `images` and `tree`, taking uploads into `images` with the tokens
/// in `tokens` (outside both roots); returns its port.
fn serve_with_uploads(images: &Path, tree: &Path, tokens: &Path) -> u16 {
    let bound = imgtool::serve::bind_with_uploads(
        imgtool::serve::ServeOptions {
            roots: vec![images.to_path_buf(), tree.to_path_buf()],
            listen: "127.0.0.1:0".into(),
            max_connections: imgtool::httpd::DEFAULT_MAX_CONNECTIONS,
        },
        Some(imgtool::upload::UploadOptions {
            tokens: tokens.to_path_buf(),
            keep: 3,
            max_upload_bytes: imgtool::upload::server::DEFAULT_MAX_UPLOAD,
        }),
    )
    .expect("binding imgtool serve with uploads");
    let port = bound.addr().expect("server address").port();
    std::thread::spawn(move || bound.run());
    port
}

/// A sparse copy of `from` at `to` (the node's own disk: the shared fixture stays as built).
fn copy_disk(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn local_capture_id(disk: &Path, work: &Path) -> String {
    let images = work.join("local");
    capture_into(disk, &images, "g");
    imgtool::manifest::Image::open(&images.join("g"))
        .unwrap()
        .id()
        .to_string()
}

#[test]
fn a_node_backs_up_its_disk_over_pxe_and_a_blank_node_clones_the_published_image() {
    skip_unless_root!("QEMU boots; scripts/test.sh runs them");
    let work = tempfile::tempdir_in(test_fixtures::disk::target_tmp()).unwrap();
    let w = work.path();
    let master: PathBuf = w.join("master.img");
    copy_disk(&fixture("gpt"), &master);
    let images = w.join("images");
    std::fs::create_dir_all(&images).unwrap();

    let kernel = kernel();
    let initrd = w.join("initrd.img");
    std::fs::write(&initrd, agent_initrd(&kernel)).unwrap();
    let tree = one_node_tree(w, "n31", MAC, &kernel, &initrd);
    let cluster = pxe_builder::model::load(&w.join("cluster.toml")).unwrap();
    let tokens = w.join("upload-tokens");
    let m = pxe_builder::backup::mark(&cluster, &tree, &tokens, "n31", "compute", None).unwrap();
    assert_eq!(m.written.len(), 3, "{m:?}");
    // The token is bound to n31's address; QEMU's user network forwards the guest's
    // connection through `nc 127.0.0.1`, so the server sees 127.0.0.1 instead.
    let n31 = cluster.nodes.iter().find(|n| n.name == "n31").unwrap().ip;
    let t = std::fs::read_to_string(&tokens).unwrap();
    let bound = format!(" {n31}\n");
    assert!(t.ends_with(&bound), "{t}");
    let t = format!("{} 127.0.0.1\n", &t[..t.len() - bound.len()]);
    std::fs::write(&tokens, t).unwrap();
    let port = serve_with_uploads(&images, &tree, &tokens);

    // Backup boot: the master as the node's NVMe disk.
    let c = boot_bios_node(w, &tree, port, &master, MAC, "node31", BOOT_TIMEOUT);
    assert!(
        c.contains("netboot: done: backup"),
        "the backup boot did not publish:\n{}",
        tail(&c, 4000)
    );
    assert!(
        c.contains("netboot: capturing"),
        "no capture progress on the console:\n{}",
        tail(&c, 4000)
    );
    let id = local_capture_id(&master, w);
    let current = std::fs::read_link(images.join("compute")).unwrap();
    assert_eq!(
        current.to_string_lossy(),
        format!("compute@{}", &id[..12]),
        "the published version is not the local capture's id"
    );
    assert_eq!(
        imgtool::manifest::Image::open(&images.join("compute"))
            .unwrap()
            .id(),
        id
    );
    assert!(
        c.contains(&id),
        "the console does not show the new id:\n{}",
        tail(&c, 4000)
    );

    // The mark cleared, a blank node (same MAC, a fresh disk) clones the new version.
    pxe_builder::backup::clear(&cluster, &tree, &tokens, "n31").unwrap();
    let disk = w.join("node31.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(std::fs::metadata(&master).unwrap().len() * 3 / 2)
        .unwrap();
    let c = boot_bios_node(w, &tree, port, &disk, MAC, "node31", BOOT_TIMEOUT);
    assert!(
        c.contains("netboot: done: image"),
        "the clone boot did not finish:\n{}",
        tail(&c, 4000)
    );
    assert!(c.contains(&id[..12]), "{}", tail(&c, 4000));
    assert_restored(&master, &disk, &[1, 2, 3, 4]);
    let board = imgtool::serve::fetch_status(&format!("http://127.0.0.1:{port}")).unwrap();
    assert_eq!(board["n31"].last.phase, "done", "{board:?}");
}
