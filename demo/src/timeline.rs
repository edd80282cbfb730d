//! The live timeline: one line per event, with seconds since the demo started and the
//! service it is about.

use std::time::Instant;

#[derive(Clone, Copy)]
pub struct Timeline {
    start: Instant,
}

impl Timeline {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Prints `[  12.3s] share-link      text`.
    pub fn say(&self, who: &str, text: impl AsRef<str>) {
        println!(
            "{}",
            line(self.start.elapsed().as_secs_f64(), who, text.as_ref())
        );
    }
}

pub fn line(secs: f64, who: &str, text: &str) -> String {
    format!("[{secs:>6.1}s] {who:<15} {text}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_align() {
        assert_eq!(
            super::line(3.04, "setup", "ready"),
            "[   3.0s] setup           ready"
        );
        assert_eq!(
            super::line(123.0, "asset-pipeline", "x"),
            "[ 123.0s] asset-pipeline  x"
        );
    }
}
