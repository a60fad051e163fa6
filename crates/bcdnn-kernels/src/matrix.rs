//! Column-major dense matrices with contiguous columns.

use faer::{MatMut, MatRef};

/// A dense `rows x cols` matrix stored column-major with no padding between columns, so that
/// the columns `j0..j1` form one contiguous slice. Every `d x n` state matrix of the trainer
/// (one column per sample) uses this type, so a tile of samples is a plain slice.
#[derive(Clone, Debug, PartialEq)]
pub struct ColMatrix<T> {
    data: Vec<T>,
    rows: usize,
    cols: usize,
}

impl<T: Copy + Default> ColMatrix<T> {
    /// Allocates a `rows x cols` matrix filled with zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        let len = rows.checked_mul(cols).expect("matrix size overflows usize");
        Self { data: vec![T::default(); len], rows, cols }
    }
}

impl<T> ColMatrix<T> {
    /// Wraps column-major data; panics unless `data.len() == rows * cols`.
    pub fn from_vec(data: Vec<T>, rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "column-major data of length {} is not {rows} x {cols}", data.len());
        Self { data, rows, cols }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Returns all entries, column after column.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// Column `j` as a slice of length `rows`.
    pub fn col(&self, j: usize) -> &[T] {
        &self.data[j * self.rows..(j + 1) * self.rows]
    }

    pub fn col_mut(&mut self, j: usize) -> &mut [T] {
        &mut self.data[j * self.rows..(j + 1) * self.rows]
    }

    /// Returns a faer view of the whole matrix.
    pub fn view(&self) -> MatRef<'_, T> {
        MatRef::from_column_major_slice(&self.data, self.rows, self.cols)
    }

    pub fn view_mut(&mut self) -> MatMut<'_, T> {
        MatMut::from_column_major_slice_mut(&mut self.data, self.rows, self.cols)
    }

    /// Bytes of storage held by the matrix.
    pub fn size_bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<T>()
    }
}

/// Views columns `cols` of a column-major `rows x _` slice as a faer matrix.
pub fn columns_view<T>(data: &[T], rows: usize, cols: std::ops::Range<usize>) -> MatRef<'_, T> {
    let slice = &data[cols.start * rows..cols.end * rows];
    MatRef::from_column_major_slice(slice, rows, cols.end - cols.start)
}

/// Views a column-major `rows x (len / rows)` slice as a mutable faer matrix.
pub fn slice_view_mut<T>(data: &mut [T], rows: usize) -> MatMut<'_, T> {
    debug_assert!(
        rows == 0 || data.len() % rows == 0,
        "slice of length {} is not a whole number of columns of {rows}",
        data.len()
    );
    let cols = data.len().checked_div(rows).unwrap_or(0);
    MatMut::from_column_major_slice_mut(data, rows, cols)
}

/// Views a column-major `rows x (len / rows)` slice as a faer matrix.
pub fn slice_view<T>(data: &[T], rows: usize) -> MatRef<'_, T> {
    debug_assert!(
        rows == 0 || data.len() % rows == 0,
        "slice of length {} is not a whole number of columns of {rows}",
        data.len()
    );
    let cols = data.len().checked_div(rows).unwrap_or(0);
    MatRef::from_column_major_slice(data, rows, cols)
}
