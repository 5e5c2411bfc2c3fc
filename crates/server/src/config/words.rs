//! Configuration errors in words a person configuring a server reads.

use serde_json::Value;

use super::LoadError;

/// The error in a namespace's options, with the key's path: deserialized through the
/// flattened [`wshub_core::config::Namespace`], the error would only name the namespace.
pub(super) fn namespace_error(root: &Value) -> Option<LoadError> {
    let Some(Value::Array(namespaces)) = root.pointer("/channel/namespaces") else {
        return None;
    };
    namespaces.iter().enumerate().find_map(|(i, ns)| {
        let mut ns = ns.clone();
        if let Value::Object(m) = &mut ns {
            m.remove("name");
        }
        serde_path_to_error::deserialize::<_, wshub_core::config::ChannelOptions>(ns)
            .err()
            .map(|e| {
                LoadError(format!(
                    "channel.namespaces[{i}].{}: {}",
                    e.path(),
                    in_words(&e.inner().to_string())
                ))
            })
    })
}

/// serde's "expected u32" in words a person configuring a server reads.
pub(super) fn in_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected an object"),
        ("expected a borrowed string", "expected a string"),
    ];
    let mut m = message.to_string();
    for (from, to) in WORDS {
        if m.contains(from) {
            m = m.replace(from, to);
        }
    }
    if let Some(i) = m.find("expected struct ") {
        m.replace_range(i.., "expected an object of keys");
    }
    m.replace("integer `", "number `")
}
