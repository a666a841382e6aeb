//! Replays every kept `seen_answer` fuzz input (fuzz/corpus/seen_answer/ seeds and
//! fuzz/regressions/seen_answer/) through `netboot_proto::seen::fuzz`; the seeds say in
//! their names whether the answer is accepted (`ok-…`) or refused (`bad-…`).

#[test]
fn seen_answer_inputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join("seen_answer")) else {
            continue;
        };
        for e in dir {
            let p = e.unwrap().path();
            let ok = netboot_proto::seen::fuzz(&std::fs::read(&p).unwrap());
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if kind == "corpus" {
                assert_eq!(ok, name.starts_with("ok-"), "{name}");
            }
            n += 1;
        }
    }
    assert!(
        n >= 5,
        "only {n} inputs: fuzz/corpus/seen_answer is missing?"
    );
}
