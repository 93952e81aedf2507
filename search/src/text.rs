//! The one word splitter every engine uses, so that both find the same
//! entries for the same words: a word is a maximal run of alphanumeric
//! characters (`char::is_alphanumeric`), lowercased; words longer than
//! [`MAX_WORD_BYTES`] are dropped. This is what tantivy's `SimpleTokenizer`
//! followed by `RemoveLongFilter` and `LowerCaser` does; the PostgreSQL
//! engine feeds these words to `to_tsvector('simple', ...)`, which keeps
//! them as they are.

/// Words longer than this (in bytes) are not indexed.
pub const MAX_WORD_BYTES: usize = 40;

/// The words of `text`, in order.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty() && word.len() <= MAX_WORD_BYTES)
        .map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_punctuation_and_lowercases() {
        let got: Vec<_> = words("Run-12 of /data/Sample_A.h5: ÉTÉ ok").collect();
        assert_eq!(
            got,
            ["run", "12", "of", "data", "sample", "a", "h5", "été", "ok"]
        );
    }

    #[test]
    fn drops_overlong_words() {
        let long = "x".repeat(MAX_WORD_BYTES + 1);
        let text = format!("short {long} end");
        assert_eq!(words(&text).collect::<Vec<_>>(), ["short", "end"]);
    }
}
