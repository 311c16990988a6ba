//! A WebAssembly custom section, encoded: what the test build appends to
//! every guest (the `algobanana-manifest` section) and what the startup
//! bench appends to make distinct components from one. One file for both,
//! because a build script cannot call the crate it builds: `build.rs` and
//! the `algobanana-tests` library each include it with `#[path]`.

/// The bytes of a custom section named `name` holding `payload`, ready to
/// append to a core module or a component (both allow custom sections
/// anywhere at their top level).
pub fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    leb128(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = vec![0];
    leb128(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Unsigned LEB128, the length encoding of the binary format.
fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
