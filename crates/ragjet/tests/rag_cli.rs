//! The `rag` example (examples/rag.rs) end to end on the real model: the
//! binary is built by cargo (a no-op when `cargo test` has just built the
//! examples) and run as a user would, on a few documents in a temporary
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The example's executable, built for this test's profile.
fn rag_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--offline",
            "-p",
            "ragjet",
            "--example",
            "rag",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root)
        .stderr(Stdio::inherit());
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build");
        assert!(out.status.success(), "cargo build --example rag failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "rag")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the rag executable")
    })
}

fn rag(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(rag_binary())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rag");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("rag runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code and returns (stdout, stderr).
fn expect_code(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

const DOCS: &str = r#"{"id": "rust", "text": "Rust is a systems programming language focused on safety, speed and concurrency. Its borrow checker prevents data races.", "lang": "rust", "year": 2015}
{"id": "python", "text": "Python is an interpreted high-level language with dynamic typing, loved for data science and scripting.", "lang": "python", "year": 1991, "tags": ["scripting", "data"]}
{"id": "bread", "text": "To bake bread, mix flour, water, salt and yeast, knead the dough, let it rise and bake it in a hot oven.", "lang": null, "year": 2020}

{"id": "tea", "text": "Green tea is brewed with water below boiling so the leaves do not turn bitter.", "topic": "drinks"}
"#;

const QUERIES: &str = r#"{"id": "q-safe", "text": "a memory safe language without data races"}
{"id": "q-bake", "text": "how do I make a loaf of bread"}
"#;

/// Every other key of each document line, as the hits must carry it.
fn doc_metadata() -> serde_json::Map<String, serde_json::Value> {
    DOCS.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(l).unwrap();
            let id = v.remove("id").unwrap();
            v.remove("text");
            (
                id.as_str().unwrap().to_string(),
                serde_json::Value::Object(v),
            )
        })
        .collect()
}

fn read_hits(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("docs.jsonl"), DOCS).unwrap();
    std::fs::write(dir.path().join("queries.jsonl"), QUERIES).unwrap();
    dir
}

#[test]
fn ingest_then_query_writes_hits_with_metadata() {
    let dir = setup();
    let d = dir.path();
    let ingest = ["ingest", "--store", "store", "--input", "docs.jsonl"];
    let (stdout, _) = expect_code(&rag(d, &ingest, None), 0);
    assert!(stdout.contains("4 ingested (0 unchanged)"), "{stdout}");
    assert!(stdout.contains("4 computed, 0 from the cache"), "{stdout}");

    // A second run finds every document unchanged and embeds nothing.
    let (stdout, _) = expect_code(&rag(d, &ingest, None), 0);
    assert!(stdout.contains("4 ingested (4 unchanged)"), "{stdout}");
    assert!(stdout.contains("0 computed"), "{stdout}");

    let query = [
        "query",
        "--store",
        "store",
        "--input",
        "queries.jsonl",
        "--top-k",
        "3",
        "--output",
        "hits.jsonl",
    ];
    expect_code(&rag(d, &query, None), 0);
    let lines = read_hits(&d.join("hits.jsonl"));
    let ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["q-safe", "q-bake"]);
    let meta = doc_metadata();
    for line in &lines {
        let hits = line["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 3, "{line}");
        for h in hits {
            let doc = h["doc_id"].as_str().unwrap();
            assert_eq!(h["id"].as_str().unwrap(), format!("{doc}#0"));
            assert!(h["score"].is_f64(), "{h}");
            // Integers come back as integers, lists and null as given.
            assert_eq!(h["metadata"], meta[doc], "metadata of {doc}");
        }
    }
    assert_eq!(lines[0]["hits"][0]["doc_id"], "rust");
    assert_eq!(lines[1]["hits"][0]["doc_id"], "bread");

    // A filter in LlamaIndex's shape: only documents from 2000 on.
    let filter = r#"{"filters": [{"key": "year", "operator": ">=", "value": 2000}]}"#;
    let mut filtered = query.to_vec();
    filtered.extend(["--filter", filter, "--mode", "hybrid", "--alpha", "0.3"]);
    expect_code(&rag(d, &filtered, None), 0);
    for line in read_hits(&d.join("hits.jsonl")) {
        let docs: Vec<&str> = line["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["doc_id"].as_str().unwrap())
            .collect();
        let mut sorted = docs.clone();
        sorted.sort();
        assert_eq!(sorted, ["bread", "rust"], "{line}");
    }

    // Keyword mode: only the bread document has the word "bread".
    let mut keyword = query.to_vec();
    keyword.extend(["--mode", "keyword"]);
    expect_code(&rag(d, &keyword, None), 0);
    let lines = read_hits(&d.join("hits.jsonl"));
    assert_eq!(lines[1]["hits"][0]["doc_id"], "bread");

    // Reranking with the tiny cross-encoder keeps N of the top-k.
    let reranker = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ragjet-inference/tests/fixtures/tiny-cross-encoder");
    let mut rerank = query.to_vec();
    rerank.extend(["--rerank", "2", "--reranker", reranker.to_str().unwrap()]);
    expect_code(&rag(d, &rerank, None), 0);
    for line in read_hits(&d.join("hits.jsonl")) {
        assert_eq!(line["hits"].as_array().unwrap().len(), 2, "{line}");
    }

    // Questions from stdin, one per line; blank lines skipped.
    let (stdout, _) = expect_code(
        &rag(
            d,
            &["query", "--store", "store", "--top-k", "1"],
            Some("how do I make a loaf of bread\n\nGreen tea brewing\n"),
        ),
        0,
    );
    assert!(stdout.contains("[bread#0]"), "{stdout}");
    assert!(stdout.contains("[tea#0]"), "{stdout}");
    assert_eq!(stdout.matches("(1 hits;").count(), 2, "{stdout}");
}

#[test]
fn bad_input_is_a_clear_error_with_a_nonzero_exit() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(
        d.join("bad.jsonl"),
        "{\"id\": \"a\", \"text\": \"fine\"}\n{\"id\": 3, \"text\": \"x\"}\nnot json\n\
         {\"id\": \"b\", \"text\": \"t\", \"meta\": {\"x\": 1}}\n",
    )
    .unwrap();
    let (_, stderr) = expect_code(
        &rag(
            d,
            &["ingest", "--store", "store", "--input", "bad.jsonl"],
            None,
        ),
        1,
    );
    assert!(stderr.contains("3 bad line(s)"), "{stderr}");
    assert!(
        stderr.contains("line 2: \"id\" must be a string"),
        "{stderr}"
    );
    assert!(stderr.contains("line 3: invalid JSON"), "{stderr}");
    assert!(
        stderr.contains("line 4: metadata \"meta\" is an object"),
        "{stderr}"
    );
    assert!(
        !d.join("store").exists(),
        "nothing is ingested from a bad file"
    );

    let (_, stderr) = expect_code(
        &rag(
            d,
            &["query", "--store", "missing", "--input", "queries.jsonl"],
            None,
        ),
        1,
    );
    assert!(stderr.contains("no ragjet store there"), "{stderr}");

    // Checked before the store is looked at.
    for (args, message) in [
        (vec!["--filter", "{\"filters\": 3}"], "--filter: "),
        (vec!["--rerank", "2"], "--rerank N needs --reranker DIR"),
        (
            vec!["--mode", "fuzzy"],
            "expected vector, keyword or hybrid",
        ),
        (vec!["--alpha", "0.5"], "--alpha needs --mode hybrid"),
        (vec!["--top-k", "ten"], "--top-k \"ten\""),
    ] {
        let mut full = vec!["query", "--store", "missing", "--input", "queries.jsonl"];
        full.extend(args);
        let (_, stderr) = expect_code(&rag(d, &full, None), 1);
        assert!(stderr.contains(message), "{full:?}: {stderr}");
    }

    std::fs::write(
        d.join("q.jsonl"),
        "{\"id\": \"q\"}\n{\"id\": \"r\", \"text\": \" \"}\n",
    )
    .unwrap();
    let (_, stderr) = expect_code(
        &rag(
            d,
            &["query", "--store", "missing", "--input", "q.jsonl"],
            None,
        ),
        1,
    );
    assert!(stderr.contains("line 1: no \"text\" field"), "{stderr}");
    assert!(stderr.contains("line 2: \"text\" is empty"), "{stderr}");
}

#[test]
fn refused_documents_exit_2_and_the_rest_are_saved() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(
        d.join("docs.jsonl"),
        "{\"id\": \"empty\", \"text\": \"   \"}\n\
         {\"id\": \"kept\", \"text\": \"Green tea is brewed below boiling.\"}\n",
    )
    .unwrap();
    let (stdout, stderr) = expect_code(
        &rag(
            d,
            &["ingest", "--store", "store", "--input", "docs.jsonl"],
            None,
        ),
        2,
    );
    assert!(stdout.contains("1 ingested"), "{stdout}");
    assert!(stdout.contains("1 failed"), "{stdout}");
    assert!(stderr.contains("\"empty\": invalid input"), "{stderr}");
    let (stdout, _) = expect_code(&rag(d, &["query", "--store", "store"], Some("tea\n")), 0);
    assert!(stdout.contains("[kept#0]"), "{stdout}");
}
