//! Prints a GGUF file's metadata (arrays summarised) and first tensors: a debugging aid.
fn main() {
    let path = std::env::args().nth(1).expect("usage: dump_meta FILE");
    let f = tessera_engine::GgufFile::open(path).unwrap();
    for (k, v) in f.metadata().entries() {
        let s = v.to_string();
        println!("{k} = {}", if s.len() > 200 { &s[..200] } else { &s });
    }
    for t in f.tensor_infos().iter().take(20) {
        println!("{} {} {:?}", t.name, t.dtype, t.shape);
    }
}
