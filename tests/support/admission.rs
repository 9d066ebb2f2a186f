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
    /// Whether the rule is CEL (evaluable without a cluster) rather than OpenAPI schema.
    pub fn is_cel(&self) -> bool {
        self.layer.as_deref() != Some("schema")
    }
}

pub fn admission_cases() -> AdmissionCases {
    serde_yaml::from_str(include_str!("../fixtures/admission-cases.yaml"))
        .expect("tests/fixtures/admission-cases.yaml is valid")
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
