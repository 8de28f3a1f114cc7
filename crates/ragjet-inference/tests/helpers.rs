//! The comparison helpers the parity and reference tests rely on: a
//! helper that let a NaN or a short output through would make those tests
//! pass on broken output.

mod common;

use common::{cosine, max_abs_diff, min_row_cosine};

#[test]
fn a_nan_anywhere_fails_every_bound() {
    let want = [0.6f32, 0.8, 0.0, 1.0];
    let mut got = want;
    got[1] = f32::NAN;
    let diff = max_abs_diff(&got, &want);
    assert!(diff.is_nan(), "max_abs_diff ignored a NaN: {diff}");
    assert!(diff.partial_cmp(&1e-5).is_none(), "NaN fails both <= and >");
    // A NaN in the last element too (a fold that only kept the first NaN
    // would be caught above; `f32::max` dropped it wherever it was).
    let mut last = want;
    last[3] = f32::NAN;
    assert!(max_abs_diff(&last, &want).is_nan());
    assert!(max_abs_diff(&want, &last).is_nan());

    // A NaN row among good ones: the minimum cosine is NaN, at that row,
    // and `min >= 0.9999` fails.
    let (min, at) = min_row_cosine(&got, &want, 2);
    assert!(min.is_nan() && at == 0, "{min} at {at}");
    let (min, at) = min_row_cosine(&last, &want, 2);
    assert!(min.is_nan() && at == 1, "{min} at {at}");
    assert!(min.partial_cmp(&0.9999).is_none());
    // A zero row has no direction: NaN as well, not a pass.
    assert!(cosine(&[0.0, 0.0], &[0.6, 0.8]).is_nan());
    // Good rows still pass, and a bad one is found.
    assert_eq!(min_row_cosine(&want, &want, 2).0, 1.0);
    let (min, at) = min_row_cosine(&[0.6, 0.8, 1.0, 0.0], &want, 2);
    assert!(min.abs() < 1e-6 && at == 1, "{min} at {at}");
}

#[test]
#[should_panic(expected = "differ in length")]
fn a_short_output_fails_max_abs_diff() {
    max_abs_diff(&[0.6, 0.8], &[0.6, 0.8, 0.0, 1.0]);
}

#[test]
#[should_panic(expected = "differ in length")]
fn a_short_vector_fails_cosine() {
    cosine(&[0.6], &[0.6, 0.8]);
}

#[test]
#[should_panic(expected = "row counts differ")]
fn a_missing_row_fails_min_row_cosine() {
    min_row_cosine(&[0.6, 0.8], &[0.6, 0.8, 0.0, 1.0], 2);
}
