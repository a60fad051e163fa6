//! IDX parser tests on small synthetic files: accepted inputs and every rejection.

mod common;

use std::path::Path;

use bcdnn_data::idx::{self, IdxError};
use common::{gzip, idx_bytes, write_file, SyntheticIdx, IMAGES_MAGIC, LABELS_MAGIC};

#[test]
fn raw_images_and_labels_parse() {
    let dir = tempfile::tempdir().unwrap();
    let data = SyntheticIdx::new(11, 7, 3, 5);
    let images_path = write_file(dir.path(), "images.idx", &data.images_idx());
    let labels_path = write_file(dir.path(), "labels.idx", &data.labels_idx());

    let images = idx::read_images(&images_path).unwrap();
    assert_eq!((images.n_images, images.n_rows, images.n_cols), (7, 3, 5));
    assert_eq!(images.n_features(), 15);
    assert_eq!(images.pixels, data.pixels);

    let labels = idx::read_labels(&labels_path, 10).unwrap();
    assert_eq!(labels, data.labels);

    let pair = idx::read_idx_dataset(&images_path, &labels_path, 10).unwrap();
    assert_eq!(pair.images(), &images);
    assert_eq!(pair.labels(), &data.labels[..]);
    assert_eq!(pair.n_classes(), 10);
}

#[test]
fn gzip_files_match_raw() {
    let dir = tempfile::tempdir().unwrap();
    let data = SyntheticIdx::new(12, 9, 4, 2);
    let images_path = write_file(dir.path(), "images.idx.gz", &gzip(&data.images_idx()));
    let labels_path = write_file(dir.path(), "labels.idx.gz", &gzip(&data.labels_idx()));

    let pair = idx::read_idx_dataset(&images_path, &labels_path, 10).unwrap();
    assert_eq!(pair.images().pixels, data.pixels);
    assert_eq!(pair.images().n_images, 9);
    assert_eq!(pair.labels(), &data.labels[..]);
}

#[test]
fn concatenated_gzip_members_decode() {
    // `cat a.gz b.gz` is a valid gzip file that decompresses to a followed by b.
    let data = SyntheticIdx::new(13, 4, 2, 2);
    let raw = data.images_idx();
    let (first, second) = raw.split_at(10);
    let mut bytes = gzip(first);
    bytes.extend(gzip(second));

    let images = idx::decode_images(&bytes, Path::new("two-members.gz")).unwrap();
    assert_eq!(images.pixels, data.pixels);
}

#[test]
fn raw_parser_rejects_gzip() {
    let data = SyntheticIdx::new(14, 3, 2, 2);
    let gz = gzip(&data.images_idx());

    let err = idx::parse_images(&gz[..], Path::new("images.gz")).unwrap_err();
    match &err {
        IdxError::BadMagic { found, expected, .. } => {
            assert_eq!(found >> 16, 0x1f8b, "found magic {found:#010x}");
            assert_eq!(*expected, IMAGES_MAGIC);
        }
        other => panic!("expected BadMagic, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("gzip"), "message does not mention gzip: {message}");
    assert!(message.contains("images.gz"), "message does not name the file: {message}");

    let labels_gz = gzip(&data.labels_idx());
    let err = idx::parse_labels(&labels_gz[..], Path::new("labels.gz"), 10).unwrap_err();
    assert!(err.to_string().contains("gzip"), "labels error: {err}");
}

#[test]
fn wrong_magic_rejected() {
    let data = SyntheticIdx::new(15, 3, 2, 2);
    let path = Path::new("x.idx");

    // A labels file where images are expected.
    let err = idx::decode_images(&data.labels_idx(), path).unwrap_err();
    assert!(
        matches!(err, IdxError::BadMagic { found: LABELS_MAGIC, expected: IMAGES_MAGIC, .. }),
        "labels file read as images: {err:?}"
    );
    assert!(err.to_string().contains("labels file"), "{err}");

    // An images file where labels are expected.
    let err = idx::decode_labels(&data.images_idx(), path, 10).unwrap_err();
    assert!(
        matches!(err, IdxError::BadMagic { found: IMAGES_MAGIC, expected: LABELS_MAGIC, .. }),
        "images file read as labels: {err:?}"
    );

    // A float IDX file (type code 0x0d), which this parser does not accept.
    let mut bytes = data.images_idx();
    bytes[2] = 0x0d;
    let err = idx::decode_images(&bytes, path).unwrap_err();
    assert!(matches!(err, IdxError::BadMagic { found: 0x0000_0d03, .. }), "type code 0x0d: {err:?}");
    assert!(err.to_string().contains("0x00000d03"), "{err}");
}

#[test]
fn truncated_payload_rejected() {
    let data = SyntheticIdx::new(16, 5, 3, 3);
    let full = data.images_idx();
    let cut = &full[..full.len() - 1];
    let path = Path::new("cut.idx");

    for (name, bytes) in [("raw", cut.to_vec()), ("gzip", gzip(cut))] {
        let err = idx::decode_images(&bytes, path).unwrap_err();
        match err {
            IdxError::Truncated { expected_bytes, found_bytes, .. } => {
                assert_eq!(expected_bytes, full.len() as u64, "{name}");
                assert_eq!(found_bytes, cut.len() as u64, "{name}");
            }
            other => panic!("{name}: expected Truncated, got {other:?}"),
        }
    }

    let labels = data.labels_idx();
    let err = idx::decode_labels(&labels[..labels.len() - 2], path, 10).unwrap_err();
    assert!(matches!(err, IdxError::Truncated { .. }), "labels: {err:?}");
}

#[test]
fn truncated_header_rejected() {
    let data = SyntheticIdx::new(17, 5, 3, 3);
    let full = data.images_idx();
    let path = Path::new("short.idx");

    // 10 bytes: magic and one and a half dimensions of the 16-byte header.
    let err = idx::decode_images(&full[..10], path).unwrap_err();
    assert!(matches!(err, IdxError::Truncated { expected_bytes: 16, found_bytes: 10, .. }), "{err:?}");

    // 2 bytes: not even a magic number.
    let err = idx::decode_images(&full[..2], path).unwrap_err();
    assert!(matches!(err, IdxError::Truncated { expected_bytes: 16, found_bytes: 2, .. }), "{err:?}");
}

#[test]
fn trailing_bytes_rejected() {
    let data = SyntheticIdx::new(18, 5, 3, 3);
    let full = data.images_idx();
    let mut long = full.clone();
    long.extend_from_slice(&[0, 1, 2]);
    let path = Path::new("long.idx");

    for (name, bytes) in [("raw", long.clone()), ("gzip", gzip(&long))] {
        let err = idx::decode_images(&bytes, path).unwrap_err();
        match err {
            IdxError::TrailingBytes { expected_bytes, found_bytes, .. } => {
                assert_eq!(expected_bytes, full.len() as u64, "{name}");
                assert_eq!(found_bytes, long.len() as u64, "{name}");
            }
            other => panic!("{name}: expected TrailingBytes, got {other:?}"),
        }
    }

    let mut labels = data.labels_idx();
    labels.push(3);
    let err = idx::decode_labels(&labels, path, 10).unwrap_err();
    assert!(matches!(err, IdxError::TrailingBytes { .. }), "labels: {err:?}");
}

#[test]
fn zero_dimension_rejected() {
    let path = Path::new("zero.idx");
    let cases: [([u32; 3], usize); 3] = [([0, 2, 2], 0), ([3, 0, 2], 1), ([3, 2, 0], 2)];
    for (dims, axis) in cases {
        let bytes = idx_bytes(IMAGES_MAGIC, &dims, &[]);
        let err = idx::decode_images(&bytes, path).unwrap_err();
        assert!(matches!(err, IdxError::ZeroDimension { axis: a, .. } if a == axis), "dims {dims:?}: {err:?}");
    }

    let bytes = idx_bytes(LABELS_MAGIC, &[0], &[]);
    let err = idx::decode_labels(&bytes, path, 10).unwrap_err();
    assert!(matches!(err, IdxError::ZeroDimension { axis: 0, .. }), "{err:?}");
}

#[test]
fn overflowing_dimensions_rejected() {
    // (2^32 - 1)^2 * 2 bytes is about 2^65 and overflows a 64-bit usize.
    let bytes = idx_bytes(IMAGES_MAGIC, &[u32::MAX, u32::MAX, 2], &[1, 2, 3]);
    let err = idx::decode_images(&bytes, Path::new("huge.idx")).unwrap_err();
    assert!(matches!(err, IdxError::TooLarge { .. }), "{err:?}");
}

#[test]
fn huge_declared_size_truncated() {
    // The header declares about 2^48 bytes but 3 are present. The parser must report the
    // truncation from the bytes present instead of reserving the declared size.
    let dims = [u32::MAX, 1 << 8, 1 << 8];
    let bytes = idx_bytes(IMAGES_MAGIC, &dims, &[1, 2, 3]);
    let err = idx::decode_images(&bytes, Path::new("huge.idx")).unwrap_err();
    let expected = 16 + u64::from(u32::MAX) * (1 << 16);
    assert!(
        matches!(err, IdxError::Truncated { expected_bytes, found_bytes: 19, .. } if expected_bytes == expected),
        "dims {dims:?}: {err:?}"
    );
}

#[test]
fn count_mismatch_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let images = SyntheticIdx::new(19, 6, 2, 2);
    let labels = SyntheticIdx::new(20, 5, 2, 2);
    let images_path = write_file(dir.path(), "images.idx", &images.images_idx());
    let labels_path = write_file(dir.path(), "labels.idx", &labels.labels_idx());

    let err = idx::read_idx_dataset(&images_path, &labels_path, 10).unwrap_err();
    match &err {
        IdxError::CountMismatch { images_path: ip, images: 6, labels_path: lp, labels: 5 } => {
            assert_eq!(ip, &images_path);
            assert_eq!(lp, &labels_path);
        }
        other => panic!("expected CountMismatch 6 vs 5, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("6 images"), "{message}");
    assert!(message.contains("5 labels"), "{message}");
}

#[test]
fn label_ten_rejected() {
    let mut labels = vec![0u8, 9, 3, 10, 2];
    let bytes = idx_bytes(LABELS_MAGIC, &[labels.len() as u32], &labels);
    let err = idx::decode_labels(&bytes, Path::new("labels.idx"), 10).unwrap_err();
    assert!(
        matches!(err, IdxError::LabelOutOfRange { index: 3, label: 10, classes: 10, .. }),
        "labels {labels:?}: {err:?}"
    );
    assert!(err.to_string().contains("label 10 at index 3"), "{err}");

    // The same labels are valid with 11 classes.
    labels.truncate(5);
    let parsed = idx::decode_labels(&bytes, Path::new("labels.idx"), 11).unwrap();
    assert_eq!(parsed, labels);
}

#[test]
fn empty_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let empty_raw = write_file(dir.path(), "empty.idx", &[]);
    let empty_gzip = write_file(dir.path(), "empty.idx.gz", &gzip(&[]));

    for path in [&empty_raw, &empty_gzip] {
        let err = idx::read_images(path).unwrap_err();
        assert!(matches!(err, IdxError::Empty { .. }), "{}: {err:?}", path.display());
        let err = idx::read_labels(path, 10).unwrap_err();
        assert!(matches!(err, IdxError::Empty { .. }), "{}: {err:?}", path.display());
    }
}

#[test]
fn corrupt_gzip_rejected() {
    let data = SyntheticIdx::new(21, 8, 4, 4);
    let mut gz = gzip(&data.images_idx());
    let middle = gz.len() / 2;
    gz[middle] ^= 0xff;
    // Also damage the CRC-32 trailer, so the error does not depend on which check fires first.
    let crc_byte = gz.len() - 6;
    gz[crc_byte] ^= 0xff;

    let err = idx::decode_images(&gz, Path::new("bad.gz")).unwrap_err();
    assert!(matches!(err, IdxError::Gzip { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.gz"), "{err}");
}

#[test]
fn missing_file_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.idx");
    let err = idx::read_images(&path).unwrap_err();
    assert!(matches!(err, IdxError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.idx"), "{err}");
}
