//! Store tests: round trip against the IDX parser, layout, and rejection of damaged files.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use bcdnn_data::idx::{self, IdxDataset};
use bcdnn_data::store::{self, OpenOptions, StoreError, FEATURES_ALIGN, HEADER_LEN};
use bcdnn_data::{DataError, Dataset};
use common::{write_file, SyntheticIdx};

const FINGERPRINT: [u8; 32] = [7; 32];

/// Parses a synthetic pair, writes it as a store and returns the parsed data and store path.
fn build_store(dir: &Path, seed: u64, n: usize) -> (IdxDataset, PathBuf) {
    let data = SyntheticIdx::new(seed, n, 4, 6);
    let images_path = write_file(dir, "images.idx", &data.images_idx());
    let labels_path = write_file(dir, "labels.idx", &data.labels_idx());
    let parsed = idx::read_idx_dataset(&images_path, &labels_path, 10).unwrap();

    let store_path = dir.join("data.bcdnn");
    store::write_store_from_idx(&store_path, &parsed, FINGERPRINT).unwrap();
    (parsed, store_path)
}

fn open(path: &Path, use_mmap: bool) -> Result<Dataset, DataError> {
    let options = OpenOptions { use_mmap, expected_fingerprint: None };
    store::open_store(path, &options)
}

fn store_error(result: Result<Dataset, DataError>) -> StoreError {
    match result {
        Err(DataError::Store(e)) => e,
        Err(other) => panic!("expected a store error, got {other:?}"),
        Ok(dataset) => panic!("expected a store error, got {dataset:?}"),
    }
}

#[test]
fn store_round_trip_matches_parser() {
    let dir = tempfile::tempdir().unwrap();
    let (parsed, store_path) = build_store(dir.path(), 31, 50);
    let expected: Vec<f32> = parsed.images().pixels.iter().map(|&p| f32::from(p) / 255.0).collect();

    for use_mmap in [true, false] {
        let dataset = open(&store_path, use_mmap).unwrap();
        assert_eq!(dataset.is_memory_mapped(), use_mmap);
        assert_eq!(dataset.n_features(), 24, "use_mmap = {use_mmap}");
        assert_eq!(dataset.n_samples(), 50, "use_mmap = {use_mmap}");
        assert_eq!(dataset.n_classes(), 10, "use_mmap = {use_mmap}");
        assert_eq!(dataset.labels(), parsed.labels(), "use_mmap = {use_mmap}");
        // Bitwise comparison: the store must hold exactly p / 255 rounded to f32.
        let stored: Vec<u32> = dataset.features().iter().map(|v| v.to_bits()).collect();
        let wanted: Vec<u32> = expected.iter().map(|v| v.to_bits()).collect();
        assert!(stored == wanted, "use_mmap = {use_mmap}: features differ from pixels / 255");
    }
}

#[test]
fn store_pixel_scaling_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..=255).collect();
    let images = common::idx_bytes(common::IMAGES_MAGIC, &[16, 4, 4], &pixels);
    let labels = common::idx_bytes(common::LABELS_MAGIC, &[16], &[0; 16]);
    let images_path = write_file(dir.path(), "images.idx", &images);
    let labels_path = write_file(dir.path(), "labels.idx", &labels);
    let parsed = idx::read_idx_dataset(&images_path, &labels_path, 10).unwrap();
    let store_path = dir.path().join("scale.bcdnn");
    store::write_store_from_idx(&store_path, &parsed, FINGERPRINT).unwrap();

    let dataset = open(&store_path, true).unwrap();
    let features = dataset.features();
    assert_eq!(features[0], 0.0);
    assert_eq!(features[255], 1.0);
    assert_eq!(features[51], 0.2, "pixel 51 should map to 51 / 255 = 0.2");
}

#[test]
fn store_layout_and_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let (parsed, store_path) = build_store(dir.path(), 32, 10);

    let header = store::read_header(&store_path).unwrap();
    assert_eq!(header.features_offset as usize % FEATURES_ALIGN, 0);
    assert_eq!(header.features_offset, HEADER_LEN as u64);
    assert_eq!(header.labels_offset, HEADER_LEN as u64 + 4 * 24 * 10);
    assert_eq!(header.file_len, header.labels_offset + 10);
    assert_eq!(header.source_fingerprint, FINGERPRINT);
    assert_eq!(fs::metadata(&store_path).unwrap().len(), header.file_len);

    let bytes = fs::read(&store_path).unwrap();
    assert_eq!(&bytes[..8], b"BCDNNDS\0");
    let labels_start = header.labels_offset as usize;
    assert_eq!(&bytes[labels_start..], parsed.labels());

    let dataset = open(&store_path, true).unwrap();
    let address = dataset.features().as_ptr() as usize;
    assert_eq!(address % FEATURES_ALIGN, 0, "mapped features at {address:#x}");
}

#[test]
fn write_store_from_view_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let features: Vec<f32> = (0..12).map(|i| i as f32 * -0.5).collect();
    let labels = vec![2u8, 0, 1, 2];
    let source = Dataset::from_vecs(features.clone(), labels.clone(), 3, 3).unwrap();
    let store_path = dir.path().join("view.bcdnn");
    store::write_store(&store_path, source.view(), FINGERPRINT).unwrap();

    let dataset = open(&store_path, true).unwrap();
    assert_eq!(dataset.features(), &features[..]);
    assert_eq!(dataset.labels(), &labels[..]);
    assert_eq!(dataset.n_classes(), 3);
}

#[test]
fn truncated_store_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store_path) = build_store(dir.path(), 33, 20);
    let bytes = fs::read(&store_path).unwrap();

    for use_mmap in [true, false] {
        fs::write(&store_path, &bytes[..bytes.len() - 1]).unwrap();
        let err = store_error(open(&store_path, use_mmap));
        assert!(
            matches!(err, StoreError::LengthMismatch { expected_bytes, found_bytes, .. }
                if expected_bytes == bytes.len() as u64 && found_bytes == bytes.len() as u64 - 1),
            "use_mmap = {use_mmap}: {err:?}"
        );

        fs::write(&store_path, &bytes[..HEADER_LEN - 1]).unwrap();
        let err = store_error(open(&store_path, use_mmap));
        assert!(
            matches!(err, StoreError::TooShort { found_bytes, .. } if found_bytes == HEADER_LEN as u64 - 1),
            "use_mmap = {use_mmap}: {err:?}"
        );
    }
}

#[test]
fn store_trailing_bytes_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store_path) = build_store(dir.path(), 34, 20);
    let mut bytes = fs::read(&store_path).unwrap();
    bytes.push(0);
    fs::write(&store_path, &bytes).unwrap();

    let err = store_error(open(&store_path, true));
    assert!(matches!(err, StoreError::LengthMismatch { .. }), "{err:?}");
}

#[test]
fn corrupted_payload_byte_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store_path) = build_store(dir.path(), 35, 20);
    let original = fs::read(&store_path).unwrap();
    let header = store::read_header(&store_path).unwrap();

    // One byte inside the features, one at the last feature byte, and one label.
    let positions = [HEADER_LEN + 37, header.labels_offset as usize - 1, header.labels_offset as usize + 5];
    for position in positions {
        for use_mmap in [true, false] {
            let mut bytes = original.clone();
            bytes[position] ^= 0x01;
            fs::write(&store_path, &bytes).unwrap();
            let err = store_error(open(&store_path, use_mmap));
            assert!(
                matches!(err, StoreError::ChecksumMismatch { .. }),
                "byte {position} flipped, use_mmap = {use_mmap}: {err:?}"
            );
        }
    }

    fs::write(&store_path, &original).unwrap();
    open(&store_path, true).expect("restored store opens");
}

#[test]
fn corrupted_header_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store_path) = build_store(dir.path(), 36, 20);
    let original = fs::read(&store_path).unwrap();

    // n_classes, in the header bytes covered by the header CRC.
    let mut bytes = original.clone();
    bytes[32] = 11;
    fs::write(&store_path, &bytes).unwrap();
    let err = store_error(open(&store_path, true));
    assert!(matches!(err, StoreError::HeaderChecksumMismatch { .. }), "{err:?}");

    let mut bytes = original.clone();
    bytes[0] = b'X';
    fs::write(&store_path, &bytes).unwrap();
    let err = store_error(open(&store_path, true));
    assert!(matches!(err, StoreError::BadMagic { .. }), "{err:?}");

    let mut bytes = original.clone();
    bytes[8] = 2;
    fs::write(&store_path, &bytes).unwrap();
    let err = store_error(open(&store_path, true));
    assert!(matches!(err, StoreError::UnsupportedVersion { found: 2, expected: 1, .. }), "{err:?}");
}

#[test]
fn inconsistent_header_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store_path) = build_store(dir.path(), 37, 20);
    let original = fs::read(&store_path).unwrap();
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&original[..HEADER_LEN]);
    let decoded = store::StoreHeader::decode(&header, &store_path).unwrap();

    // A header with a valid CRC whose offsets disagree with its shape.
    let mut shifted = decoded.clone();
    shifted.features_offset = 192;
    let mut bytes = original.clone();
    bytes[..HEADER_LEN].copy_from_slice(&shifted.encode());
    fs::write(&store_path, &bytes).unwrap();
    let err = store_error(open(&store_path, true));
    assert!(matches!(err, StoreError::InvalidHeader { .. }), "{err:?}");
}

#[test]
fn stale_fingerprint_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store_path) = build_store(dir.path(), 38, 20);
    let options = OpenOptions { use_mmap: true, expected_fingerprint: Some([8; 32]) };
    let err = store_error(store::open_store(&store_path, &options));
    assert!(matches!(err, StoreError::Stale { .. }), "{err:?}");

    let options = OpenOptions { use_mmap: true, expected_fingerprint: Some(FINGERPRINT) };
    store::open_store(&store_path, &options).expect("matching fingerprint opens");
}

#[test]
fn missing_store_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = store_error(open(&dir.path().join("absent.bcdnn"), true));
    assert!(err.is_not_found(), "{err:?}");
}

#[test]
fn rewrite_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let (parsed, store_path) = build_store(dir.path(), 39, 20);
    let mapped = open(&store_path, true).unwrap();
    let labels_before = mapped.labels().to_vec();

    // Replacing the store while it is mapped must not change the mapped data, because the
    // writer renames a new file over the old one instead of writing in place.
    store::write_store_from_idx(&store_path, &parsed, [9; 32]).unwrap();
    assert_eq!(mapped.labels(), &labels_before[..]);
    assert_eq!(store::read_header(&store_path).unwrap().source_fingerprint, [9; 32]);

    let mut names: Vec<String> =
        fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["data.bcdnn", "images.idx", "labels.idx"]);
}

#[test]
fn source_fingerprint_detects_change() {
    let a = store::source_fingerprint(&[b"images", b"labels"]);
    let b = store::source_fingerprint(&[b"images", b"labelt"]);
    // Moving a byte across the file boundary must change the fingerprint too.
    let c = store::source_fingerprint(&[b"imageslabels", b""]);
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_eq!(a, store::source_fingerprint(&[b"images", b"labels"]));
}
