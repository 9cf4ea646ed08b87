//! Test plugin: misbehaves on request (by Subject), to prove the host survives it.
use mailgate_sdk::{Event, Hook, Plugin, Verdict, host};

struct Misbehave;

impl Plugin for Misbehave {
    const HOOKS: &'static [Hook] = &[Hook::Receive];

    fn on_receive(event: &Event) -> Verdict {
        let subject = event.message.as_ref().map(|m| m.subject.as_str()).unwrap_or("");
        match subject {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    // black_box keeps the optimiser from proving the loop useless.
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut v: Vec<Vec<u8>> = Vec::new();
                loop {
                    v.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "panic" => panic!("asked to panic"),
            "dns" => match host::dns("A", "mx.example.test") {
                Ok(a) => Verdict::default().header("X-Dns", &a.join(",")),
                Err(e) => Verdict::default().header("X-Dns-Error", &e),
            },
            _ => Verdict::default().header("X-Misbehave", "behaved"),
        }
    }
}

mailgate_sdk::export_plugin!(Misbehave);
