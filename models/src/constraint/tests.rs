//! Tests of the GBNF front end (the token-level behaviour is tested with real vocabularies in
//! `tests/tests/constraint.rs`).

use super::Grammar;
use super::gbnf::{GbnfError, to_lark};

fn err(text: &str) -> GbnfError {
    to_lark(text).expect_err("the grammar should be refused")
}

#[test]
fn a_choice_becomes_a_start_rule() {
    let lark = to_lark("root ::= \"yes\" | \"no\"\n").unwrap();
    assert!(lark.contains("start: \"yes\" | \"no\""), "{lark}");
}

#[test]
fn non_recursive_rules_become_terminals_and_names_are_mapped() {
    let g = r#"
# arithmetic
root  ::= expr
expr  ::= term (("+" | "-") term)*
term  ::= num-lit | "(" expr ")"
num-lit ::= [0-9]+ ("." [0-9]{1,3})?
"#;
    let lark = to_lark(g).unwrap();
    assert!(lark.contains("start: expr"), "{lark}");
    assert!(
        lark.contains("NUM_LIT: /[0-9]/+ (\".\" /[0-9]/{1,3})?"),
        "{lark}"
    );
    // `term` and `expr` are recursive: rules.
    assert!(lark.contains("term: NUM_LIT | \"(\" expr \")\""), "{lark}");
}

#[test]
fn escapes_and_classes_are_converted() {
    let lark = to_lark(r#"root ::= "a\n\"\x41\u00e9" [^"\\\]] [a-z\-] ."#).unwrap();
    assert!(lark.contains(r#""a\n\"Aé""#), "{lark}");
    assert!(lark.contains(r"/[^\x{22}\x{5C}\x{5D}]/"), "{lark}");
    assert!(lark.contains(r"/[a-z\x{2D}]/"), "{lark}");
    assert!(lark.contains("/(?s:.)/"), "{lark}");
}

#[test]
fn errors_name_line_and_column() {
    let e = err("root ::= foo\nfoo ::= \"a\" bar\n");
    assert_eq!((e.line, e.column), (2, 13), "{e}");
    assert!(e.message.contains("undefined rule `bar`"), "{e}");

    let e = err("root ::= \"abc\n");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("newline inside a string"), "{e}");

    let e = err("root ::= [a-z\n");
    assert_eq!((e.line, e.column), (1, 10), "{e}");
    assert!(e.message.contains("unterminated character class"), "{e}");

    let e = err("root := \"a\"\n");
    assert_eq!((e.line, e.column), (1, 6), "{e}");
    assert!(e.message.contains("::="), "{e}");

    let e = err("item ::= \"a\"\n");
    assert!(e.message.contains("no `root` rule"), "{e}");

    let e = err("root ::= \"a\"{3,1}\n");
    assert!(e.message.contains("below its minimum"), "{e}");

    let e = err("root ::= \"\\q\"\n");
    assert!(e.message.contains("unknown escape"), "{e}");

    let e = err("root ::= (\"a\" | \"b\"\n");
    assert!(e.message.contains("expected `)`"), "{e}");

    let e = err("root ::= \"a\"\nroot ::= \"b\"\n");
    assert_eq!(e.line, 2);
}

#[test]
fn grammar_files_are_told_apart() {
    assert!(matches!(
        Grammar::from_grammar_text("start: \"a\"\n"),
        Grammar::Lark(_)
    ));
    assert!(matches!(
        Grammar::from_grammar_text("root ::= \"a\"\n"),
        Grammar::Gbnf(_)
    ));
    assert!(Grammar::json_schema_from_str("[1]").is_err());
    assert!(Grammar::json_schema_from_str("{\"type\": \"object\"").is_err());
}

#[test]
fn objects_without_a_word_on_extra_keys_are_closed() {
    let mut schema = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"x": {"type": "integer"}}},
            "b": {"type": "array", "items": {"properties": {"y": {}}}},
            "c": {"type": "object", "properties": {}, "additionalProperties": true},
            "d": {"allOf": [{"properties": {"p": {}}}, {"properties": {"q": {}}}]}
        },
        "$defs": {"e": {"properties": {"z": {}}}}
    });
    super::vocab::close_objects(&mut schema);
    let closed = |v: &serde_json::Value| v["additionalProperties"] == serde_json::json!(false);
    assert!(closed(&schema));
    assert!(closed(&schema["properties"]["a"]));
    assert!(closed(&schema["properties"]["b"]["items"]));
    assert!(closed(&schema["$defs"]["e"]));
    // Said explicitly: kept; allOf parts: left open (closing both would allow nothing).
    assert_eq!(schema["properties"]["c"]["additionalProperties"], true);
    assert!(
        schema["properties"]["d"]["allOf"][0]
            .get("additionalProperties")
            .is_none()
    );
}
