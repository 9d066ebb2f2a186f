//! A stand-in LLM provider for the demo: serves the model listings of OpenAI, Azure OpenAI,
//! Anthropic and Ollama on a loopback port, accepting any key. The same fake the cluster tests
//! use (`tests/support/fake_provider.rs`).
//!
//!     cargo run --example fake-llm-provider -- 127.0.0.1:18631

#[path = "../tests/support/fake_provider.rs"]
#[allow(dead_code)]
mod fake_provider;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18631".to_string());
    // The models of config/samples: OpenAI's and the Ollama fallback's.
    let behaviour = fake_provider::Behaviour {
        models: ["gpt-4o", "gpt-4o-mini", "llama3.1:8b"]
            .map(String::from)
            .to_vec(),
        ..fake_provider::Behaviour::default()
    };
    let fake = fake_provider::FakeProvider::start_on(&address, behaviour).await;
    println!(
        "fake LLM provider on http://{} (OpenAI-style base URL: {})",
        fake.address,
        fake.openai_endpoint()
    );
    let _ = tokio::signal::ctrl_c().await;
}
