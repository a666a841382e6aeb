//! The simulator evaluates the plans pxe-builder writes: a cluster described in
//! cluster.toml, planned by pxe-builder, reads as the same links as the simulator's own
//! generated shape, and simulates to the same figures.

use netboot_sim::engine::run;
use netboot_sim::net::{Net, Scheme};
use netboot_sim::params::Params;
use netboot_sim::shapes::{generate, Shape};

/// `racks` racks of `per` nodes (`n0`, `n1`, … in rack order), one group.
fn cluster(racks: usize, per: usize, shape: &str, extra: &str) -> String {
    let mut t = format!(
        "[cluster]\nname = \"sim\"\nimage_server = \"http://10.255.0.1:8080\"\n\
         server_ip = \"10.255.0.1\"\nkernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\n\
         rack_shape = \"{shape}\"\n{extra}\n[[group]]\nname = \"compute\"\n\n"
    );
    for e in 0..racks {
        t += &format!(
            "[[entity]]\nname = \"rack{e}\"\nsubnet = \"10.0.{e}.0/24\"\n\
             gateway = \"10.0.{e}.254\"\ndefault_group = \"compute\"\n\n"
        );
    }
    for i in 0..racks * per {
        let (e, h) = (i / per, i % per);
        t += &format!(
            "[[node]]\nname = \"n{i}\"\nmac = \"52:54:00:00:{:02x}:{:02x}\"\n\
             ip = \"10.0.{e}.{}\"\nentity = \"rack{e}\"\ngroups = [\"compute\"]\n\n",
            i >> 8,
            i & 255,
            h + 1
        );
    }
    t
}

fn planned(text: &str) -> Net {
    let c = pxe_builder::model::parse_in_memory(text, "cluster.toml").expect("valid cluster");
    Net::from_plan(&pxe_builder::plan::clone_plan(&c), Scheme::Plan).expect("plan reads")
}

/// Upstream names by node name.
fn links(net: &Net) -> Vec<(String, Option<String>)> {
    let mut v: Vec<_> = (0..net.len())
        .map(|i| {
            let up = net.upstream[i].map(|u| net.names[u as usize].clone());
            (net.names[i].clone(), up)
        })
        .collect();
    v.sort();
    v
}

fn single(p: &Params) -> f64 {
    netboot_sim::single(p).unwrap()
}

fn total(net: &Net, p: &Params) -> f64 {
    run(net, p)
        .unwrap()
        .iter()
        .filter_map(|o| o.done)
        .fold(0.0, f64::max)
}

#[test]
fn pxe_builders_shapes_are_the_simulators() {
    // 30 racks of 10; the primary carries 3 node links: 3 roots, fan-out 2.
    let links_3 = "node_link_gbps = 10\nprimary_uplink_gbps = 30\nspine_gbps = 100\n\
                   rack_uplink_gbps = 100\ntree_fanout = 2\n";
    for (shape, ours) in [
        ("serial", Shape::Serial),
        ("chain", Shape::Chain),
        ("fanout", Shape::Fanout),
        (
            "tree",
            Shape::Tree {
                roots: 3,
                fanout: 2,
            },
        ),
    ] {
        let net = planned(&cluster(30, 10, shape, links_3));
        let gen = generate(300, 10, ours);
        assert_eq!(links(&net), links(&gen), "{shape}");
        // Same links and racks: without random boots or failures (drawn per node
        // index, and the plan lists nodes by name) the same figures.
        let p = Params::default();
        let (a, b) = (total(&net, &p), total(&gen, &p));
        assert!(
            (a - b).abs() < 1e-9 && a > single(&p),
            "{shape}: {a} vs {b}"
        );
    }
    // auto: serial when the primary has one full-rate stream and the group is small,
    // the tree otherwise.
    let one = "node_link_gbps = 10\nprimary_uplink_gbps = 10\n";
    let net = planned(&cluster(4, 16, "auto", one));
    assert_eq!(links(&net), links(&generate(64, 16, Shape::Serial)));
    let net = planned(&cluster(4, 16, "auto", links_3));
    assert_eq!(
        links(&net),
        links(&generate(
            64,
            16,
            Shape::Tree {
                roots: 3,
                fanout: 2
            }
        ))
    );
}
