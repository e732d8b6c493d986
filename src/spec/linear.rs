//! `torch.nn.Linear`: `y = x W^T + b` (F.linear), with W in Hugging Face's [out_features,
//! in_features] layout: validation.
//!
//! ```text
//! x [.., in] (rows = product of the leading dims), W [out, in], b [out] -> y [.., out]
//! ```
//! x, W and b share one storage dtype; products are accumulated in FP32, the bias added in FP32 and
//! the sum rounded once to y's dtype. A weight passed transposed ([in, out]) has another shape and
//! is refused, unless in == out.

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "linear";

/// Rows of x, in_features and out_features of a validated linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearDims {
    pub rows: usize,
    pub in_features: usize,
    pub out_features: usize,
}

/// Validate `x` \[.., in\], `weight` \[out, in\] and `bias` \[out\] (all one dtype).
pub fn check_linear(x: Layout, weight: Layout, bias: Option<Layout>) -> Result<LinearDims> {
    if x.shape.rank() == 0 {
        return Err(Error::shape(OP, format!("x must have rank >= 1, got {x}")));
    }
    let in_features = x.shape.last();
    let [out_features, w_in] = weight.shape.dims() else {
        return Err(Error::shape(OP, format!("weight must be [out_features, in_features], got {weight}")));
    };
    if *w_in != in_features {
        return Err(Error::shape(
            OP,
            format!("weight {weight} has in_features {w_in} but x {x} has {in_features} (is the weight transposed?)"),
        ));
    }
    if in_features == 0 || *out_features == 0 {
        return Err(Error::shape(OP, format!("empty layer: x {x}, weight {weight}")));
    }
    if weight.dtype != x.dtype {
        return Err(Error::dtype(OP, format!("weight is {} but x is {}", weight.dtype, x.dtype)));
    }
    if let Some(b) = bias {
        if b.shape.dims() != [*out_features] {
            return Err(Error::shape(OP, format!("bias {b} must be [{out_features}]")));
        }
        if b.dtype != x.dtype {
            return Err(Error::dtype(OP, format!("bias is {} but x is {}", b.dtype, x.dtype)));
        }
    }
    Ok(LinearDims { rows: x.numel() / in_features, in_features, out_features: *out_features })
}
