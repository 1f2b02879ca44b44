//! Golden tests for JSON response translation: `tests/golden/response/<direction>/<case>/in.json`
//! translated must equal `out.json` (compared as parsed JSON). `UPDATE_GOLDEN=1` rewrites the
//! out files; read every rewritten file before committing it.

use std::fs;
use std::path::Path;

use cheapmodel::dialect::response;
use serde_json::Value;

const CALLER_MODEL: &str = "caller-model";
const CREATED: u64 = 1_700_000_000;

fn run(direction: &str, translate: impl Fn(&[u8]) -> Vec<u8>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/response").join(direction);
    let mut cases = 0;
    for entry in fs::read_dir(&dir).expect("golden dir") {
        let case = entry.expect("entry").path();
        let input = fs::read(case.join("in.json")).expect("in.json");
        let got: Value = serde_json::from_slice(&translate(&input)).expect("translator output is JSON");
        let out = case.join("out.json");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            fs::write(&out, serde_json::to_string_pretty(&got).expect("json") + "\n").expect("write");
        }
        let want: Value = serde_json::from_slice(&fs::read(&out).expect("out.json")).expect("out.json is JSON");
        assert_eq!(got, want, "case {}", case.display());
        cases += 1;
    }
    assert!(cases >= 5, "too few cases in {direction}");
}

#[test]
fn anthropic_to_openai() {
    run("anthropic_to_openai", |b| response::anthropic_to_openai(b, CALLER_MODEL, CREATED).expect("translates"));
}

#[test]
fn openai_to_anthropic() {
    run("openai_to_anthropic", |b| response::openai_to_anthropic(b, CALLER_MODEL).expect("translates"));
}
