//! Dataset and DatasetView tests on in-memory data.

use bcdnn_data::{DataError, Dataset, DatasetView};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_dataset(seed: u64, n_features: usize, n_samples: usize) -> (Vec<f32>, Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let features = (0..n_features * n_samples).map(|_| rng.random()).collect();
    let labels = (0..n_samples).map(|_| rng.random_range(0..10u8)).collect();
    (features, labels)
}

#[test]
fn from_vecs_exposes_data() {
    let (features, labels) = random_dataset(41, 5, 8);
    let dataset = Dataset::from_vecs(features.clone(), labels.clone(), 5, 10).unwrap();
    assert_eq!(dataset.n_features(), 5);
    assert_eq!(dataset.n_samples(), 8);
    assert_eq!(dataset.n_classes(), 10);
    assert_eq!(dataset.features(), &features[..]);
    assert_eq!(dataset.labels(), &labels[..]);
    assert!(!dataset.is_memory_mapped());

    let view = dataset.view();
    assert_eq!(view.n_samples(), 8);
    assert_eq!(view.features().as_ptr(), dataset.features().as_ptr());

    // Debug output shows dimensions, not the feature values.
    let debug = format!("{view:?}");
    assert_eq!(debug, "DatasetView { n_features: 5, n_samples: 8, n_classes: 10 }");
    let debug = format!("{dataset:?}");
    assert!(debug.contains("n_samples: 8"), "{debug}");
    assert!(debug.len() < 120, "{debug}");
}

#[test]
fn view_new_rejects_bad_shape() {
    let features = vec![0.0f32; 12];
    let labels = vec![0u8; 4];

    let err = DatasetView::new(&features, &labels, 4, 10).unwrap_err();
    assert!(
        matches!(err, DataError::ShapeMismatch { n_features: 4, n_samples: 4, found: 12 }),
        "12 values, 4 labels, 4 features: {err:?}"
    );

    let err = DatasetView::new(&features, &labels, 0, 10).unwrap_err();
    assert!(matches!(err, DataError::ZeroFeatures), "{err:?}");

    for n_classes in [0, 257] {
        let err = DatasetView::new(&features, &labels, 3, n_classes).unwrap_err();
        assert!(
            matches!(err, DataError::InvalidClassCount { n_classes: c } if c == n_classes),
            "n_classes = {n_classes}: {err:?}"
        );
    }

    DatasetView::new(&features, &labels, 3, 256).expect("256 classes is valid for u8 labels");
}

#[test]
fn view_new_rejects_label_out_of_range() {
    let features = vec![0.0f32; 8];
    let labels = vec![1u8, 0, 3, 2];
    let err = DatasetView::new(&features, &labels, 2, 3).unwrap_err();
    assert!(
        matches!(err, DataError::LabelOutOfRange { index: 2, label: 3, classes: 3 }),
        "labels {labels:?} with 3 classes: {err:?}"
    );

    let err = Dataset::from_vecs(features.clone(), labels.clone(), 2, 3).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { .. }), "{err:?}");
}

#[test]
fn view_empty_is_valid() {
    let view = DatasetView::new(&[], &[], 3, 10).unwrap();
    assert_eq!(view.n_samples(), 0);
    assert_eq!(view.matrix().nrows(), 3);
    assert_eq!(view.matrix().ncols(), 0);
}

#[test]
fn matrix_is_column_major() {
    let (features, labels) = random_dataset(42, 6, 9);
    let view = DatasetView::new(&features, &labels, 6, 10).unwrap();
    let matrix = view.matrix();
    assert_eq!((matrix.nrows(), matrix.ncols()), (6, 9));
    assert_eq!(matrix.as_ptr(), features.as_ptr(), "matrix must borrow, not copy");
    for j in 0..9 {
        for i in 0..6 {
            assert_eq!(matrix[(i, j)], features[j * 6 + i], "entry ({i}, {j})");
        }
    }
}

#[test]
fn columns_is_zero_copy_subrange() {
    let (features, labels) = random_dataset(43, 4, 10);
    let view = DatasetView::new(&features, &labels, 4, 10).unwrap();

    let sub = view.columns(3..7).unwrap();
    assert_eq!(sub.n_samples(), 4);
    assert_eq!(sub.n_features(), 4);
    assert_eq!(sub.n_classes(), 10);
    assert_eq!(sub.features(), &features[12..28]);
    assert_eq!(sub.labels(), &labels[3..7]);
    assert_eq!(sub.features().as_ptr(), features[12..].as_ptr());
    assert_eq!(sub.matrix()[(1, 0)], features[13]);

    let nested = sub.columns(1..2).unwrap();
    assert_eq!(nested.labels(), &labels[4..5]);

    let empty = view.columns(10..10).unwrap();
    assert_eq!(empty.n_samples(), 0);
}

#[test]
fn columns_rejects_bad_range() {
    let (features, labels) = random_dataset(44, 2, 5);
    let view = DatasetView::new(&features, &labels, 2, 10).unwrap();

    let err = view.columns(3..6).unwrap_err();
    assert!(matches!(err, DataError::InvalidSampleRange { start: 3, end: 6, n_samples: 5 }), "{err:?}");
    #[allow(clippy::reversed_empty_ranges)]
    let err = view.columns(4..2).unwrap_err();
    assert!(matches!(err, DataError::InvalidSampleRange { start: 4, end: 2, .. }), "{err:?}");
}

#[test]
fn head_clamps_to_samples() {
    let (features, labels) = random_dataset(45, 3, 5);
    let view = DatasetView::new(&features, &labels, 3, 10).unwrap();
    assert_eq!(view.head(2).labels(), &labels[..2]);
    assert_eq!(view.head(2).features(), &features[..6]);
    assert_eq!(view.head(99).n_samples(), 5);
    assert_eq!(view.head(0).n_samples(), 0);
}
