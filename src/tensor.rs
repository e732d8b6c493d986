//! Tensors: a shape and dtype (`Layout`), host tensors for references and round trips, and device
//! tensors with borrowed views. All tensors are contiguous and row-major.
//!
//! A `DeviceTensor` owns one device allocation (256-byte aligned by the driver). A `View`/`ViewMut`
//! borrows a contiguous range of one, with its own layout; `rows(..)` narrows the leading dimension
//! (how guard bands, KV-cache windows and batch slices are made) and `reshape` reinterprets the same
//! elements. Views remember their byte offset so kernels can tell whether 16-byte vector access is legal.

use crate::dtype::DType;
use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::Gpu;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use std::fmt;
use std::ops::Range;

/// Highest rank a tensor may have ([batch, tokens, heads, head_dim] is the largest we need).
pub const MAX_RANK: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl Shape {
    pub fn new(dims: &[usize]) -> Result<Self> {
        if dims.len() > MAX_RANK {
            return Err(Error::shape("Shape::new", format!("rank {} > {MAX_RANK} ({dims:?})", dims.len())));
        }
        let mut d = [0; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        let shape = Shape { dims: d, rank: dims.len() };
        dims.iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n))
            .ok_or_else(|| Error::shape("Shape::new", format!("element count of {shape} overflows usize")))?;
        Ok(shape)
    }

    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// Size of the last dimension (1 for a scalar).
    pub fn last(&self) -> usize {
        self.dims().last().copied().unwrap_or(1)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.dims())
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What an op needs to validate an operand: dtype and shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub dtype: DType,
    pub shape: Shape,
}

impl Layout {
    /// A layout whose byte count fits the address space (`isize::MAX`, Rust's limit on one
    /// allocation), so [`Layout::bytes`] and every byte offset derived from it are exact.
    pub fn new(dtype: DType, dims: &[usize]) -> Result<Self> {
        let shape = Shape::new(dims)?;
        if shape.numel().checked_mul(dtype.size()).is_none_or(|b| b > isize::MAX as usize) {
            return Err(Error::shape(
                "Layout::new",
                format!("{dtype}{shape}: {} elements of {} bytes exceed isize::MAX bytes", shape.numel(), dtype.size()),
            ));
        }
        Ok(Layout { dtype, shape })
    }

    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// A host tensor whose values are held as f32, each exactly representable in `layout.dtype`.
/// This is what CPU references consume and produce.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    layout: Layout,
    data: Vec<f32>,
}

impl HostTensor {
    /// `values` rounded to `dtype` (round to nearest even, as PyTorch's `.to(dtype)`).
    pub fn from_f32(dtype: DType, dims: &[usize], mut values: Vec<f32>) -> Result<Self> {
        let layout = Layout::new(dtype, dims)?;
        if values.len() != layout.numel() {
            return Err(Error::shape(
                "HostTensor::from_f32",
                format!("{} values for shape {} ({} elements)", values.len(), layout.shape, layout.numel()),
            ));
        }
        dtype.round_slice(&mut values);
        Ok(HostTensor { layout, data: values })
    }

    pub fn full(dtype: DType, dims: &[usize], value: f32) -> Result<Self> {
        let layout = Layout::new(dtype, dims)?;
        HostTensor::from_f32(dtype, dims, vec![value; layout.numel()])
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn dtype(&self) -> DType {
        self.layout.dtype
    }

    pub fn dims(&self) -> &[usize] {
        self.layout.shape.dims()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
}

/// A tensor in device memory: one allocation, contiguous, row-major.
pub struct DeviceTensor {
    buf: CudaSlice<u8>,
    layout: Layout,
}

impl DeviceTensor {
    /// A tensor of zeros.
    pub fn zeros(gpu: &Gpu, dtype: DType, dims: &[usize]) -> Result<Self> {
        let layout = Layout::new(dtype, dims)?;
        // At least one byte: a zero-element tensor still owns a (tiny) allocation.
        let buf = gpu.stream().alloc_zeros::<u8>(layout.bytes().max(1)).cuda("cuMemAllocAsync")?;
        Ok(DeviceTensor { buf, layout })
    }

    /// Wrap a device buffer the caller already holds (an engine's weights, say) as a tensor of
    /// `dtype` and `dims`, without copying: its byte length must be exactly the layout's. The
    /// buffer must belong to the same context as the `Gpu` the tensor is used with.
    pub fn from_slice(buf: CudaSlice<u8>, dtype: DType, dims: &[usize]) -> Result<Self> {
        let layout = Layout::new(dtype, dims)?;
        if buf.len() != layout.bytes().max(1) {
            return Err(Error::shape("DeviceTensor::from_slice", format!("a buffer of {} bytes for {layout} ({} bytes)", buf.len(), layout.bytes())));
        }
        Ok(DeviceTensor { buf, layout })
    }

    /// The device buffer (its first `layout().bytes()` bytes are the elements).
    pub fn into_slice(self) -> CudaSlice<u8> {
        self.buf
    }

    /// Upload a host tensor.
    pub fn from_host(gpu: &Gpu, host: &HostTensor) -> Result<Self> {
        let mut t = DeviceTensor::zeros(gpu, host.dtype(), host.dims())?;
        t.view_mut().upload(gpu, host)?;
        Ok(t)
    }

    /// Download to the host (synchronises the stream).
    pub fn to_host(&self, gpu: &Gpu) -> Result<HostTensor> {
        self.view().to_host(gpu)
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn dtype(&self) -> DType {
        self.layout.dtype
    }

    pub fn dims(&self) -> &[usize] {
        self.layout.shape.dims()
    }

    pub fn view(&self) -> View<'_> {
        View { data: self.buf.slice(0..self.layout.bytes()), layout: self.layout, byte_offset: 0 }
    }

    pub fn view_mut(&mut self) -> ViewMut<'_> {
        let bytes = self.layout.bytes();
        ViewMut { data: self.buf.slice_mut(0..bytes), layout: self.layout, byte_offset: 0 }
    }
}

/// Byte range of rows `rows` of a tensor with layout `layout`, and the narrowed layout.
fn row_range(op: &'static str, layout: Layout, rows: &Range<usize>) -> Result<(Range<usize>, Layout)> {
    let dims = layout.shape.dims();
    let Some(&leading) = dims.first() else {
        return Err(Error::shape(op, format!("cannot take rows of a scalar tensor {layout}")));
    };
    if rows.start > rows.end || rows.end > leading {
        return Err(Error::shape(op, format!("rows {rows:?} out of range for {layout} (leading dim {leading})")));
    }
    let row_bytes = layout.bytes() / leading.max(1);
    let mut new_dims = [0usize; MAX_RANK];
    new_dims[..dims.len()].copy_from_slice(dims);
    new_dims[0] = rows.end - rows.start;
    let new_layout = Layout::new(layout.dtype, &new_dims[..dims.len()])?;
    Ok((rows.start * row_bytes..rows.end * row_bytes, new_layout))
}

fn reshaped(op: &'static str, layout: Layout, dims: &[usize]) -> Result<Layout> {
    let new = Layout::new(layout.dtype, dims)?;
    if new.numel() != layout.numel() {
        return Err(Error::shape(op, format!("cannot reshape {layout} ({} elements) to {dims:?}", layout.numel())));
    }
    Ok(new)
}

/// A borrowed, read-only range of a device tensor.
pub struct View<'a> {
    pub(crate) data: CudaView<'a, u8>,
    layout: Layout,
    byte_offset: usize,
}

impl<'a> View<'a> {
    /// The device memory of this view (its first byte is the first element), for launching a
    /// kernel of one's own on it (`Gpu::launcher`).
    pub fn device_data(&self) -> &CudaView<'a, u8> {
        &self.data
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Offset of the first element from the start of its (256-byte aligned) allocation.
    pub fn byte_offset(&self) -> usize {
        self.byte_offset
    }

    /// Rows `rows` of the leading dimension.
    pub fn rows(&self, rows: Range<usize>) -> Result<View<'a>> {
        let (bytes, layout) = row_range("View::rows", self.layout, &rows)?;
        let byte_offset = self.byte_offset + bytes.start;
        Ok(View { data: self.data.slice(bytes), layout, byte_offset })
    }

    /// The same elements with another shape.
    pub fn reshape(self, dims: &[usize]) -> Result<View<'a>> {
        let layout = reshaped("View::reshape", self.layout, dims)?;
        Ok(View { layout, ..self })
    }

    /// Download to the host (synchronises the stream).
    pub fn to_host(&self, gpu: &Gpu) -> Result<HostTensor> {
        let bytes = gpu.stream().clone_dtoh(&self.data).cuda("cuMemcpyDtoHAsync")?;
        gpu.stream().synchronize().cuda("cuStreamSynchronize")?;
        Ok(HostTensor { layout: self.layout, data: self.layout.dtype.decode(&bytes) })
    }
}

/// A borrowed, writable range of a device tensor.
pub struct ViewMut<'a> {
    pub(crate) data: CudaViewMut<'a, u8>,
    layout: Layout,
    byte_offset: usize,
}

impl<'a> ViewMut<'a> {
    /// The device memory of this view, writable (see [`View::device_data`]).
    pub fn device_data_mut(&mut self) -> &mut CudaViewMut<'a, u8> {
        &mut self.data
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn byte_offset(&self) -> usize {
        self.byte_offset
    }

    /// Rows `rows` of the leading dimension.
    pub fn rows_mut(&mut self, rows: Range<usize>) -> Result<ViewMut<'_>> {
        let (bytes, layout) = row_range("ViewMut::rows_mut", self.layout, &rows)?;
        let byte_offset = self.byte_offset + bytes.start;
        Ok(ViewMut { data: self.data.slice_mut(bytes), layout, byte_offset })
    }

    /// The same elements with another shape.
    pub fn reshape(self, dims: &[usize]) -> Result<ViewMut<'a>> {
        let layout = reshaped("ViewMut::reshape", self.layout, dims)?;
        Ok(ViewMut { layout, ..self })
    }

    /// Copy a host tensor of the same layout into this view.
    pub fn upload(&mut self, gpu: &Gpu, host: &HostTensor) -> Result<()> {
        if host.layout() != self.layout {
            return Err(Error::shape("ViewMut::upload", format!("host {} into device {}", host.layout(), self.layout)));
        }
        let bytes = self.layout.dtype.encode(host.data());
        gpu.stream().memcpy_htod(&bytes, &mut self.data).cuda("cuMemcpyHtoDAsync")?;
        // The staging buffer is pageable host memory, so the copy has completed when memcpy returns;
        // synchronising here keeps that true even if the copy path changes.
        gpu.stream().synchronize().cuda("cuStreamSynchronize")
    }

    /// Download to the host (synchronises the stream).
    pub fn to_host(&self, gpu: &Gpu) -> Result<HostTensor> {
        let bytes = gpu.stream().clone_dtoh(&self.data).cuda("cuMemcpyDtoHAsync")?;
        gpu.stream().synchronize().cuda("cuStreamSynchronize")?;
        Ok(HostTensor { layout: self.layout, data: self.layout.dtype.decode(&bytes) })
    }
}
