//! The table of admission cases in `tests/fixtures/admission-cases.yaml`, shared by the
//! client-side CEL test and the cluster test.

use std::collections::BTreeMap;

use serde_json::{Value, json};

#[derive(serde::Deserialize)]
pub struct AdmissionCases {
    pub bases: BTreeMap<String, Value>,
    pub invalid: Vec<AdmissionCase>,
    pub valid: Vec<AdmissionCase>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionCase {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub object_name: Option<String>,
    #[serde(default)]
    pub patch: Value,
    #[serde(default)]
    pub update: Option<Value>,
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub layer: Option<String>,
}

impl AdmissionCase {
    /// Whether the rule is CEL rather than OpenAPI schema.
    pub fn is_cel(&self) -> bool {
        self.layer.as_deref() != Some("schema")
    }

    /// Whether the client-side CEL evaluator can judge the case: not a schema rule, and not a
    /// rule of the API server's own CEL libraries (quantities), which only a real API server has.
    pub fn is_client_side(&self) -> bool {
        self.layer.is_none()
    }
}

/// Strings too long to write in the table, by their placeholder: 40,000 two-byte characters
/// (80,000 bytes, under the character bound but over the byte limit) and 32,768 (exactly
/// 65,536 bytes).
fn placeholder(text: &str) -> Option<String> {
    match text {
        "__MULTIBYTE_INPUT__" => Some("é".repeat(40_000)),
        "__MULTIBYTE_INPUT_AT_LIMIT__" => Some("é".repeat(32_768)),
        _ => None,
    }
}

fn expand_placeholders(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Some(expanded) = placeholder(text) {
                *text = expanded;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(expand_placeholders),
        Value::Object(map) => map.values_mut().for_each(expand_placeholders),
        _ => {}
    }
}

pub fn admission_cases() -> AdmissionCases {
    let mut cases: AdmissionCases =
        serde_yaml::from_str(include_str!("../fixtures/admission-cases.yaml"))
            .expect("tests/fixtures/admission-cases.yaml is valid");
    for case in cases.invalid.iter_mut().chain(cases.valid.iter_mut()) {
        expand_placeholders(&mut case.patch);
    }
    cases
}

impl AdmissionCases {
    /// The object a case describes: its kind's base with the case's patch and name.
    pub fn object_for(&self, case: &AdmissionCase) -> Value {
        self.named_base(
            &case.kind,
            case.object_name.as_deref().unwrap_or(&case.name),
            &case.patch,
        )
    }

    /// The base object of a kind, patched and named.
    pub fn named_base(&self, kind: &str, name: &str, patch: &Value) -> Value {
        let mut object = self.bases[kind].clone();
        if !patch.is_null() {
            super::merge_patch(&mut object, patch);
        }
        object["metadata"] = json!({ "name": name });
        object
    }
}
