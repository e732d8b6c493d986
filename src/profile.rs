//! The report behind `qwen-kernels profile`: one decode step of a preset model, node by node.
//!
//! The model has the preset's real sizes in bf16 with zero weights (the bytes moved and the
//! arithmetic do not depend on the values), `batch` sequences whose caches hold `context`
//! positions (zeros: the cache is allocated zeroed), graphs on as in serving.
//!
//! - On the software device each node of the step (every kernel launch, copy, set and cuBLAS
//!   call the captured graph replays, and the copy of the step's report to the host that follows
//!   the graph: model/device/report.rs) gets the `counters` tool's figures (softgpu/tools.cpp):
//!   bytes as requested, the bytes a DRAM would move (distinct 32-byte sectors x 32, read and
//!   written), the ideal (distinct bytes: each weight, input and output touched once), their
//!   ratio, sectors per warp request and shared-memory bank conflicts. cuBLAS calls run on the
//!   host there and are counted from their operands (as an ideal GEMM reads them). These are
//!   counts and a model, not times.
//! - On a GPU each node's time is measured: the step is launched directly (no graph) with an
//!   event after every launch, so a node's time is from the previous event to its own (a copy or
//!   set queued between two launches counts in the second); the whole step is also timed as
//!   graph replays. The bytes columns are then the ideal bytes of the same node on the software
//!   device's count: not measured on hardware, and left out.
//!
//! The modelled time of a node (both devices) is `moved bytes / H200_COPY_BYTES_PER_S +
//! NODE_FIXED_US`: the copy bandwidth measured on an H200 and the fixed cost per graph node that
//! published Hopper measurements put at 1.3-2 us even inside a graph (their middle is used). It
//! ignores what the L2 cache keeps between nodes and every overlap of one node with the next.

use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::{DeviceKind, Gpu, SoftwareCounters};
use crate::model::{DecodePath, DeviceModel, ModelOptions, Qwen2Config};
use crate::{DType, DeviceTensor};
use std::fmt::Write as _;

/// An H200's measured device-to-device copy bandwidth, bytes per second.
pub const H200_COPY_BYTES_PER_S: f64 = 4.3e12;
/// The fixed cost assumed per node of a captured graph, microseconds.
pub const NODE_FIXED_US: f64 = 1.5;

/// One node of the step.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// From ptxas' report for sm_90 (None for copies, sets and cuBLAS).
    pub registers: Option<u32>,
    pub dynamic_shared: u32,
    /// Bytes as requested (every access's size summed).
    pub requested_bytes: u64,
    /// Distinct 32-byte sectors x 32, read and written: what DRAM moves if nothing is fetched twice.
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// Distinct bytes read plus distinct bytes written.
    pub ideal_bytes: u64,
    /// Mean distinct sectors per warp request, reads and writes together (None without requests).
    pub sectors_per_request: Option<f64>,
    pub bank_conflicts: u64,
    pub modelled_us: f64,
    /// On a GPU: the node's measured time.
    pub measured_us: Option<f64>,
}

impl Node {
    fn from_counters(c: &SoftwareCounters) -> Node {
        let read_bytes = if c.kind == 0 { c.distinct_read_sectors * 32 } else { c.distinct_read_bytes };
        let write_bytes = if c.kind == 0 { c.distinct_write_sectors * 32 } else { c.distinct_write_bytes };
        let requests = c.global_read_requests + c.global_write_requests;
        Node {
            name: c.name().to_string(),
            grid: c.grid,
            block: c.block,
            registers: None,
            dynamic_shared: c.dynamic_shared,
            requested_bytes: c.global_read_bytes + c.global_write_bytes,
            read_bytes,
            write_bytes,
            ideal_bytes: c.distinct_read_bytes + c.distinct_write_bytes,
            sectors_per_request: (requests > 0).then(|| (c.global_read_sectors + c.global_write_sectors) as f64 / requests as f64),
            bank_conflicts: c.shared_bank_conflicts,
            modelled_us: modelled_us(read_bytes + write_bytes),
            measured_us: None,
        }
    }
}

/// The model of a node's time on an H200 (module docs).
pub fn modelled_us(bytes: u64) -> f64 {
    bytes as f64 / H200_COPY_BYTES_PER_S * 1e6 + NODE_FIXED_US
}

/// One decode step, node by node.
#[derive(Clone, Debug)]
pub struct Profile {
    pub model: String,
    pub batch: usize,
    pub context: usize,
    pub device: String,
    pub kind: DeviceKind,
    pub path: DecodePath,
    /// Nodes of the captured decode-step graph (cuGraphGetNodes).
    pub graph_nodes: usize,
    pub nodes: Vec<Node>,
    /// On a GPU: the mean time of a whole step replayed from its graph.
    pub measured_step_us: Option<f64>,
}

impl Profile {
    pub fn read_bytes(&self) -> u64 {
        self.nodes.iter().map(|n| n.read_bytes).sum()
    }
    pub fn write_bytes(&self) -> u64 {
        self.nodes.iter().map(|n| n.write_bytes).sum()
    }
    pub fn ideal_bytes(&self) -> u64 {
        self.nodes.iter().map(|n| n.ideal_bytes).sum()
    }
    /// Every load and store as the threads issued them (counted on the software device; 0 on a
    /// GPU): past the bytes moved, these are re-reads that L2 (or L1) serves.
    pub fn requested_bytes(&self) -> u64 {
        self.nodes.iter().map(|n| n.requested_bytes).sum()
    }
    pub fn modelled_us(&self) -> f64 {
        self.nodes.iter().map(|n| n.modelled_us).sum()
    }

    /// The step as a roofline (`qwen-kernels profile --svg`): each node's moved bytes against its
    /// time, measured on a GPU (where no bytes are counted, so the nodes are left out of the
    /// figure and only the lines and the caption remain), the model's on the software device.
    pub fn roofline(&self) -> crate::plot::Roofline {
        let measured = self.kind == DeviceKind::Hardware;
        crate::plot::Roofline {
            title: format!("{} decode step ({} path), batch {}, context {}, bf16", self.model, self.path, self.batch, self.context),
            times: if measured { "nodes, measured on the GPU" } else { "nodes, modelled (software device: counted bytes)" },
            bandwidth: H200_COPY_BYTES_PER_S,
            bandwidth_source: "H200, measured copy".to_string(),
            fixed_us: NODE_FIXED_US,
            points: self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| crate::plot::RooflinePoint {
                    label: format!("node {i} {}", n.name),
                    bytes: (n.read_bytes + n.write_bytes) as f64,
                    us: n.measured_us.unwrap_or(n.modelled_us),
                })
                .collect(),
        }
    }

    /// Keep the nodes whose name contains `op` (`--op`).
    pub fn only(mut self, op: &str) -> Profile {
        self.nodes.retain(|n| n.name.contains(op));
        self
    }

    /// The table, and the summary line scripts read.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let counted = self.kind == DeviceKind::Software;
        writeln!(s, "profile: {} decode step ({} path), batch {}, context {}, bf16 on {}", self.model, self.path, self.batch, self.context, self.device).unwrap();
        if counted {
            writeln!(s, "the software device: byte columns are counts (softgpu counters tool), times are a model, not measurements").unwrap();
        }
        writeln!(
            s,
            "model: moved bytes / {:.1} TB/s (H200 copy bandwidth) + {NODE_FIXED_US} us per node (fixed cost in a graph); L2 reuse and overlap ignored",
            H200_COPY_BYTES_PER_S / 1e12
        )
        .unwrap();
        writeln!(
            s,
            "{:>4}  {:<30} {:>15} {:>10} {:>4} {:>6} {:>12} {:>12} {:>12} {:>6} {:>6} {:>5} {:>9} {:>9}",
            "node", "name", "grid", "block", "regs", "dyn_sh", "requested", "moved", "ideal", "ratio", "sec/rq", "bank", "model_us", "meas_us"
        )
        .unwrap();
        for (i, n) in self.nodes.iter().enumerate() {
            let grid = format!("{}x{}x{}", n.grid[0], n.grid[1], n.grid[2]);
            let block = format!("{}x{}x{}", n.block[0], n.block[1], n.block[2]);
            let moved = n.read_bytes + n.write_bytes;
            writeln!(
                s,
                "{:>4}  {:<30} {:>15} {:>10} {:>4} {:>6} {:>12} {:>12} {:>12} {:>6} {:>6} {:>5} {:>9.2} {:>9}",
                i,
                n.name,
                if n.grid[0] > 0 { grid } else { "-".into() },
                if n.block[0] > 0 { block } else { "-".into() },
                n.registers.map_or("-".into(), |r| r.to_string()),
                n.dynamic_shared,
                n.requested_bytes,
                moved,
                n.ideal_bytes,
                if n.ideal_bytes > 0 { format!("{:.3}", moved as f64 / n.ideal_bytes as f64) } else { "-".into() },
                n.sectors_per_request.map_or("-".into(), |x| format!("{x:.2}")),
                n.bank_conflicts,
                n.modelled_us,
                n.measured_us.map_or("-".into(), |t| format!("{t:.2}")),
            )
            .unwrap();
        }
        let (r, w, i) = (self.read_bytes(), self.write_bytes(), self.ideal_bytes());
        let ratio = if i > 0 { (r + w) as f64 / i as f64 } else { f64::NAN };
        // What the threads requested against what a DRAM would move: the re-reads (a decode GEMV's
        // activation rows, read again by every block) that L2 serves and the model does not charge.
        let requested = if counted && r + w > 0 {
            format!(", requested {} bytes ({:.2}x moved)", self.requested_bytes(), self.requested_bytes() as f64 / (r + w) as f64)
        } else {
            String::new()
        };
        let measured = match self.measured_step_us {
            Some(t) => format!(", measured {t:.1} us"),
            None => String::new(),
        };
        writeln!(
            s,
            "step: {} nodes ({} in the graph), {r} bytes read, {w} bytes written, ideal {i} bytes, ratio {ratio:.3}{requested}, modelled {:.1} us (H200){measured}",
            self.nodes.len(),
            self.graph_nodes,
            self.modelled_us()
        )
        .unwrap();
        s
    }
}

/// A zero-weight bf16 model of `cfg` with `batch` sequences of `context` cached positions,
/// decoding (graphs on).
fn model_at(gpu: &Gpu, cfg: &Qwen2Config, batch: usize, context: usize, path: DecodePath) -> Result<DeviceModel> {
    if batch == 0 || context == 0 || context + 2 > cfg.max_position_embeddings {
        return Err(Error::InvalidArgument {
            op: "profile",
            detail: format!("batch {batch}, context {context}: need batch >= 1 and 1 <= context <= {}", cfg.max_position_embeddings - 2),
        });
    }
    let options = ModelOptions { decode_path: path, ..ModelOptions::new(DType::BF16, batch, context + 2) };
    let mut m = DeviceModel::from_device_tensors(gpu, cfg, options, |_, dims| DeviceTensor::zeros(gpu, DType::BF16, dims))?;
    let slots: Vec<usize> = (0..batch).collect();
    for &s in &slots {
        m.set_cached_len(s, context)?;
    }
    m.begin_decode(gpu, &slots, &vec![0; batch])?;
    Ok(m)
}

/// Profile one decode step of `cfg` (module docs).
pub fn decode_step(gpu: &Gpu, cfg: &Qwen2Config, batch: usize, context: usize, path: DecodePath) -> Result<Profile> {
    let mut m = model_at(gpu, cfg, batch, context, path)?;
    // The first step captures the graph; the second is the one profiled.
    m.decode_step(gpu)?;
    gpu.synchronize()?;
    let graph_nodes = m.decode_graph_nodes()?.unwrap_or(0);
    let registers = crate::kernels::resources();
    let regs = |name: &str| registers.iter().find(|r| r.kernel == name && r.target == "sm_90").map(|r| r.registers);
    let mut profile = Profile {
        model: cfg.name.to_string(),
        batch,
        context,
        device: gpu.describe(),
        kind: gpu.info().kind,
        path,
        graph_nodes,
        nodes: Vec::new(),
        measured_step_us: None,
    };
    match gpu.info().kind {
        DeviceKind::Software => {
            let tools = gpu.software_tools()?;
            gpu.take_software_counters()?;
            gpu.set_software_tools(&format!("{tools},counters"))?;
            let stepped = m.decode_step(gpu).and_then(|_| gpu.synchronize());
            gpu.set_software_tools(&tools)?;
            stepped?;
            profile.nodes = gpu.take_software_counters()?.iter().map(Node::from_counters).collect();
        }
        DeviceKind::Hardware => {
            // The whole step from its graph, then node by node from direct launches.
            const REPLAYS: usize = 20;
            let ctx = gpu.context();
            let (start, end) = (ctx.new_event(None).cuda("cuEventCreate")?, ctx.new_event(None).cuda("cuEventCreate")?);
            start.record(gpu.stream()).cuda("cuEventRecord")?;
            for _ in 0..REPLAYS {
                m.decode_step(gpu)?;
            }
            end.record(gpu.stream()).cuda("cuEventRecord")?;
            end.synchronize().cuda("cuEventSynchronize")?;
            profile.measured_step_us = Some(start.elapsed_ms(&end).cuda("cuEventElapsedTime")? as f64 * 1e3 / REPLAYS as f64);
            m.set_graphs(false);
            m.decode_step(gpu)?;
            gpu.synchronize()?;
            gpu.begin_node_timing()?;
            let stepped = m.decode_step(gpu);
            let times = gpu.end_node_timing()?;
            stepped?;
            profile.nodes = times
                .iter()
                .map(|&(name, ms)| Node {
                    name: name.to_string(),
                    grid: [0; 3],
                    block: [0; 3],
                    registers: None,
                    dynamic_shared: 0,
                    requested_bytes: 0,
                    read_bytes: 0,
                    write_bytes: 0,
                    ideal_bytes: 0,
                    sectors_per_request: None,
                    bank_conflicts: 0,
                    modelled_us: NODE_FIXED_US,
                    measured_us: Some(ms * 1e3),
                })
                .collect();
        }
    }
    for n in &mut profile.nodes {
        n.registers = regs(&n.name);
    }
    Ok(profile)
}
