//! The clock times and days of the lines the window shows, formatted once as lines come
//! in rather than at every frame.

use std::borrow::{Borrow, Cow};
use std::collections::HashMap;

use qchat_client::history::ChatLine;

use crate::format;
use crate::text::Lang;

/// The most entries kept; past it, what the lines shown do not need goes.
const MOST: usize = 4 * crate::log::MAX_LOADED;

/// Formatted times, by the minute they stand for.
#[derive(Debug, Default)]
pub struct Stamps {
    clocks: HashMap<i64, String>,
    days: HashMap<(i64, Lang), String>,
    /// The lines covered last (how many, the first's and last's times, the language): the
    /// same again needs nothing formatted, and is not looked through.
    covered: Option<(usize, i64, i64, Lang)>,
}

fn minute(time_ms: i64) -> i64 {
    time_ms.div_euclid(60_000)
}

impl Stamps {
    /// `HH:MM` of `time_ms` (formatted now if it was not yet).
    pub fn clock(&self, time_ms: i64) -> Cow<'_, str> {
        match self.clocks.get(&minute(time_ms)) {
            Some(clock) => Cow::Borrowed(clock),
            None => Cow::Owned(format::clock(time_ms)),
        }
    }

    /// The day of `time_ms` in `lang` (formatted now if it was not yet).
    pub fn day(&self, time_ms: i64, lang: Lang) -> Cow<'_, str> {
        match self.days.get(&(minute(time_ms), lang)) {
            Some(day) => Cow::Borrowed(day),
            None => Cow::Owned(format::day(time_ms, lang.strings())),
        }
    }

    /// Formats the times of `lines` not formatted yet.
    pub fn cover(&mut self, lines: &[impl Borrow<ChatLine>], lang: Lang) {
        let time = |line: Option<&_>| line.map_or(0, |l: &_| Borrow::<ChatLine>::borrow(l).time_ms);
        let key = (lines.len(), time(lines.first()), time(lines.last()), lang);
        if self.covered == Some(key) {
            return;
        }
        if self.clocks.len() > MOST || self.days.len() > MOST {
            self.clocks.clear();
            self.days.clear();
        }
        for line in lines.iter().map(Borrow::borrow) {
            let at = minute(line.time_ms);
            self.clocks.entry(at).or_insert_with(|| format::clock(line.time_ms));
            self.days.entry((at, lang)).or_insert_with(|| format::day(line.time_ms, lang.strings()));
        }
        self.covered = Some(key);
    }

    /// How many times are kept.
    pub fn len(&self) -> usize {
        self.clocks.len() + self.days.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::tests::from_bob;

    fn at(minute: i64) -> ChatLine {
        ChatLine { time_ms: 1_764_547_200_000 + minute * 60_000, ..from_bob(minute as u64 + 1, "alice+bob") }
    }

    #[test]
    fn times_are_formatted_once_the_same_as_on_the_fly_and_stay_bounded() {
        let mut stamps = Stamps::default();
        let lines: Vec<ChatLine> = (0..10).map(at).collect();
        assert!(matches!(stamps.clock(lines[0].time_ms), Cow::Owned(_)), "not formatted yet");
        stamps.cover(&lines, Lang::Zh);
        for line in &lines {
            let clock = stamps.clock(line.time_ms);
            assert!(matches!(clock, Cow::Borrowed(_)));
            assert_eq!(clock, format::clock(line.time_ms));
            assert_eq!(stamps.day(line.time_ms, Lang::Zh), format::day(line.time_ms, Lang::Zh.strings()));
        }
        assert!(matches!(stamps.day(lines[0].time_ms, Lang::En), Cow::Owned(_)), "each language on its own");
        // A long scroll through the history: what is kept stays bounded.
        for start in (0..20).map(|i| i * MOST as i64) {
            let far: Vec<ChatLine> = (start..start + MOST as i64 / 2).map(at).collect();
            stamps.cover(&far, Lang::En);
            assert!(stamps.len() <= 2 * MOST + MOST, "{}", stamps.len());
            assert!(matches!(stamps.clock(far[0].time_ms), Cow::Borrowed(_)), "what is shown is kept");
        }
    }
}
