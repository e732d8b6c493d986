//! Building a [`DeviceModel`]: the weights uploaded in the model's dtype (from host weights, a
//! checkpoint directory or an engine's device tensors), q/k/v and gate/up merged, the KV cache and
//! the workspace allocated once.

use super::*;

/// bf16 bits as `dtype` bytes (f32 exact, f16 rounded to nearest even, bf16 as is).
fn encode_bf16(dtype: DType, bits: &[u16]) -> Vec<u8> {
    match dtype {
        DType::BF16 => bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
        DType::F32 => bits.iter().flat_map(|&b| bf16_to_f32(b).to_le_bytes()).collect(),
        DType::F16 => bits.iter().flat_map(|&b| half::f16::from_f32(bf16_to_f32(b)).to_bits().to_le_bytes()).collect(),
    }
}

fn upload(gpu: &Gpu, dtype: DType, dims: &[usize], bits: &[u16]) -> Result<DeviceTensor> {
    let mut t = DeviceTensor::zeros(gpu, dtype, dims)?;
    if t.layout().numel() != bits.len() {
        return Err(Error::shape(OP, format!("{} values for {}", bits.len(), t.layout())));
    }
    let bytes = encode_bf16(dtype, bits);
    gpu.stream().memcpy_htod(&bytes, &mut t.view_mut().data).cuda("cuMemcpyHtoD(weights)")?;
    Ok(t)
}

/// The tensors' rows one after another in one new tensor (device to device): [q; k; v] and
/// [gate; up] weights and biases.
fn concat_rows(gpu: &Gpu, parts: &[DeviceTensor]) -> Result<DeviceTensor> {
    let first = parts.first().ok_or_else(|| bad("nothing to concatenate".into()))?;
    let mut dims = first.dims().to_vec();
    dims[0] = parts.iter().map(|p| p.dims()[0]).sum();
    let mut out = DeviceTensor::zeros(gpu, first.dtype(), &dims)?;
    let mut row = 0;
    {
        let mut all = out.view_mut();
        for p in parts {
            let n = p.dims()[0];
            gpu.stream().memcpy_dtod(&p.view().data, &mut all.rows_mut(row..row + n)?.data).cuda("cuMemcpyDtoD(merged weight)")?;
            row += n;
        }
    }
    gpu.synchronize()?;
    Ok(out)
}

fn i32s(gpu: &Gpu, n: usize) -> Result<CudaSlice<i32>> {
    gpu.stream().alloc_zeros::<i32>(n.max(1)).cuda("cuMemAlloc(model indices)")
}

impl DeviceModel {
    /// Upload `weights` (bf16 on the host) in `options.dtype` and allocate the KV cache and the
    /// workspace.
    pub fn new(gpu: &Gpu, weights: &ModelWeights, options: ModelOptions) -> Result<Self> {
        /// A host tensor of the weights: bf16 bits (matrices) or values (norms, biases).
        enum Host<'a> {
            Bits(&'a [u16]),
            Values(&'a [f32]),
        }
        // Every tensor by its Hugging Face name, handed to from_device_tensors as it asks.
        let mut host: HashMap<String, Host> = HashMap::new();
        host.insert("model.embed_tokens.weight".into(), Host::Bits(&weights.embed_tokens.bits));
        if let Some(m) = &weights.lm_head {
            host.insert("lm_head.weight".into(), Host::Bits(&m.bits));
        }
        host.insert("model.norm.weight".into(), Host::Values(&weights.norm));
        for (i, l) in weights.layers.iter().enumerate() {
            let p = |n: &str| format!("model.layers.{i}.{n}");
            host.insert(p("input_layernorm.weight"), Host::Values(&l.input_layernorm));
            host.insert(p("post_attention_layernorm.weight"), Host::Values(&l.post_attention_layernorm));
            let linears = [
                ("self_attn.q_proj", &l.q_proj),
                ("self_attn.k_proj", &l.k_proj),
                ("self_attn.v_proj", &l.v_proj),
                ("self_attn.o_proj", &l.o_proj),
                ("mlp.gate_proj", &l.gate_proj),
                ("mlp.up_proj", &l.up_proj),
                ("mlp.down_proj", &l.down_proj),
            ];
            for (name, lin) in linears {
                host.insert(p(&format!("{name}.weight")), Host::Bits(&lin.weight.bits));
                if let Some(b) = &lin.bias {
                    host.insert(p(&format!("{name}.bias")), Host::Values(b));
                }
            }
        }
        let dt = options.dtype;
        Self::from_device_tensors(gpu, &weights.config, options, |name, dims| match host.get(name) {
            Some(Host::Bits(bits)) => upload(gpu, dt, dims, bits),
            Some(Host::Values(values)) => DeviceTensor::from_host(gpu, &HostTensor::from_f32(dt, dims, values.to_vec())?),
            None => Err(bad(format!("the weights have no {name}"))),
        })
    }

    /// Read a Hugging Face checkpoint directory: config.json and the safetensors transformers
    /// loads (one file, or the shards the index names; [`Checkpoint`]), each tensor bf16, f16 or
    /// f32 on disk, converted to `options.dtype` as PyTorch's `.to(dtype)` does (round to nearest
    /// even) and uploaded; the lm_head is the embedding when the config ties them.
    pub fn from_checkpoint(gpu: &Gpu, dir: &std::path::Path, options: ModelOptions) -> Result<Self> {
        let name = dir.file_name().map_or("checkpoint".to_string(), |n| n.to_string_lossy().into_owned());
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| Error::invalid("checkpoint", format!("cannot read {}/config.json: {e}", dir.display())))?;
        let config = Qwen2Config::from_hf_json(&name, &text)?;
        let ckpt = Checkpoint::open(dir)?;
        Self::from_device_tensors(gpu, &config, options, |name, dims| {
            let (dtype, bytes) = ckpt.tensor(name, dims)?;
            if dtype == options.dtype {
                let mut t = DeviceTensor::zeros(gpu, dtype, dims)?;
                gpu.stream().memcpy_htod(bytes, &mut t.view_mut().data).cuda("cuMemcpyHtoD(weights)")?;
                return Ok(t);
            }
            DeviceTensor::from_host(gpu, &HostTensor::from_f32(options.dtype, dims, dtype.decode(bytes))?)
        })
    }

    /// Build from tensors the caller already holds on the device, by Hugging Face name
    /// (`model.embed_tokens.weight`, `model.layers.{i}.self_attn.q_proj.weight`, ...; `lm_head.weight`
    /// unless the embeddings are tied). `take(name, dims)` hands over each tensor, which must have
    /// `options.dtype` and exactly `dims` (wrap a cudarc buffer with [`DeviceTensor::from_slice`]).
    /// The model keeps them, except the q/k/v projections' weights and biases and gate_proj and
    /// up_proj, which are copied (on the device) into the merged [q; k; v] and [gate; up] tensors
    /// and dropped.
    pub fn from_device_tensors(
        gpu: &Gpu,
        config: &Qwen2Config,
        options: ModelOptions,
        mut take: impl FnMut(&str, &[usize]) -> Result<DeviceTensor>,
    ) -> Result<Self> {
        let c = config;
        Self::check_options(c, &options)?;
        let dt = options.dtype;
        let (h, inter, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let (q_out, kv_out) = (c.num_attention_heads * d, c.num_key_value_heads * d);
        let mut get = |name: &str, dims: &[usize]| -> Result<DeviceTensor> {
            let t = take(name, dims)?;
            if t.dtype() != dt || t.dims() != dims {
                return Err(Error::shape(OP, format!("{name} is {}, expected {dt}{dims:?}", t.layout())));
            }
            Ok(t)
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{i}.{n}");
            let gate_up = concat_rows(gpu, &[get(&p("mlp.gate_proj.weight"), &[inter, h])?, get(&p("mlp.up_proj.weight"), &[inter, h])?])?;
            let qkv = concat_rows(
                gpu,
                &[get(&p("self_attn.q_proj.weight"), &[q_out, h])?, get(&p("self_attn.k_proj.weight"), &[kv_out, h])?, get(&p("self_attn.v_proj.weight"), &[kv_out, h])?],
            )?;
            let qkv_bias = concat_rows(
                gpu,
                &[get(&p("self_attn.q_proj.bias"), &[q_out])?, get(&p("self_attn.k_proj.bias"), &[kv_out])?, get(&p("self_attn.v_proj.bias"), &[kv_out])?],
            )?;
            layers.push(Layer {
                input_norm: get(&p("input_layernorm.weight"), &[h])?,
                qkv,
                qkv_bias,
                o: get(&p("self_attn.o_proj.weight"), &[h, q_out])?,
                post_norm: get(&p("post_attention_layernorm.weight"), &[h])?,
                gate_up,
                down: get(&p("mlp.down_proj.weight"), &[h, inter])?,
            });
        }
        let embed = get("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let lm_head = if c.tie_word_embeddings { None } else { Some(get("lm_head.weight", &[c.vocab_size, h])?) };
        let norm = get("model.norm.weight", &[h])?;
        Self::assemble(gpu, c.clone(), options, embed, lm_head, norm, layers)
    }

    fn check_options(c: &Qwen2Config, o: &ModelOptions) -> Result<()> {
        if o.slots == 0 || o.capacity == 0 || o.prefill_chunk == 0 || o.page_size == 0 || o.num_pages == 0 {
            return Err(bad(format!(
                "slots {}, capacity {}, prefill_chunk {}, page_size {} and num_pages {} must be positive",
                o.slots, o.capacity, o.prefill_chunk, o.page_size, o.num_pages
            )));
        }
        if o.capacity > c.max_position_embeddings {
            return Err(bad(format!("capacity {} past the model's max_position_embeddings {}", o.capacity, c.max_position_embeddings)));
        }
        attention::check_head_dim(OP, c.head_dim)?;
        to_i32("capacity", o.capacity)?;
        to_i32("slots", o.slots)?;
        // Slots of the cache (page * page_size + offset) are i32, and so is a table's reach.
        to_i32("num_pages x page_size", o.num_pages.saturating_mul(o.page_size))?;
        to_i32("capacity rounded up to pages", o.capacity.div_ceil(o.page_size) * o.page_size)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        gpu: &Gpu,
        config: Qwen2Config,
        options: ModelOptions,
        embed: DeviceTensor,
        lm_head: Option<DeviceTensor>,
        norm: DeviceTensor,
        layers: Vec<Layer>,
    ) -> Result<Self> {
        let c = &config;
        let dt = options.dtype;
        let rows = options.prefill_chunk.max(options.slots);
        let (h, inter, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let (heads, kv) = (c.num_attention_heads, c.num_key_value_heads);
        let zeros = |dims: &[usize]| DeviceTensor::zeros(gpu, dt, dims);
        let cache = PagedCache::new(gpu, dt, options.kv_layout, layers.len(), options.num_pages, options.page_size, kv, d, options.slots, options.capacity)?;
        let max_pages = cache.max_pages;
        let max_len = max_pages * options.page_size;
        let ws = Workspace {
            rows,
            resid: zeros(&[rows, h])?,
            xn: zeros(&[rows, h])?,
            qkv: zeros(&[rows, (heads + 2 * kv) * d])?,
            q: zeros(&[rows, heads, d])?,
            attn: zeros(&[rows, heads, d])?,
            proj: zeros(&[rows, h])?,
            gate_up: zeros(&[rows, 2 * inter])?,
            act: zeros(&[rows, inter])?,
            attn_ws: DeviceTensor::zeros(gpu, DType::F32, &[attention::decode_workspace_len(options.slots, heads, d, max_len, options.decode_chunk)])?,
            logits: DeviceTensor::zeros(gpu, DType::F32, &[options.slots, c.vocab_size])?,
            prefill_logits: DeviceTensor::zeros(gpu, DType::F32, &[options.slots, c.vocab_size])?,
            prefill_argmax: ArgmaxOutput::new(gpu, options.slots)?,
            tokens: i32s(gpu, rows)?,
            positions: i32s(gpu, rows)?,
            slot_mapping: i32s(gpu, rows)?,
            pre_table: i32s(gpu, options.slots * max_pages)?,
            pre_len: i32s(gpu, options.slots)?,
            pre_cu: i32s(gpu, options.slots + 1)?,
            dec: DecodeRows { positions: i32s(gpu, options.slots)?, lens: i32s(gpu, options.slots)?, slot_mapping: i32s(gpu, options.slots)? },
            dec_tables: i32s(gpu, options.slots * max_pages)?,
            argmax: ArgmaxOutput::new(gpu, options.slots)?,
            head_cand: HeadCandidates::new(gpu, options.slots, c.vocab_size)?,
        };
        let bytes = |t: &DeviceTensor| t.layout().bytes();
        let weights = bytes(&embed)
            + lm_head.as_ref().map_or(0, bytes)
            + bytes(&norm)
            + layers
                .iter()
                .map(|l| {
                    [&l.input_norm, &l.qkv, &l.qkv_bias, &l.o, &l.post_norm, &l.gate_up, &l.down]
                        .into_iter()
                        .map(bytes)
                        .sum::<usize>()
                })
                .sum::<usize>();
        let kv_cache = cache.layers.iter().map(|c| c.bytes()).sum();
        let index_bytes = (3 * rows + 2 * options.slots * max_pages + 5 * options.slots + 1) * 4;
        let argmax_bytes = 2 * options.slots * (8 + argmax::CHUNKS * 8) + options.slots * c.vocab_size.div_ceil(8) * 8;
        let workspace = [&ws.resid, &ws.xn, &ws.qkv, &ws.q, &ws.attn, &ws.proj, &ws.gate_up, &ws.act, &ws.attn_ws, &ws.logits, &ws.prefill_logits]
            .into_iter()
            .map(bytes)
            .sum::<usize>()
            + index_bytes
            + argmax_bytes;
        let rope = RopeTable::new(gpu, c.rope_theta, d, c.max_position_embeddings)?;
        let embed_status = EmbedStatus::new(gpu)?;
        let attn_status = AttentionStatus::new(gpu)?;
        let reports = report::StepReports::new(gpu, options.slots)?;
        let workspace = workspace + reports.device_bytes();
        gpu.synchronize()?;
        Ok(DeviceModel {
            lens: vec![0; options.slots],
            device_lens_stale: false,
            batch: Vec::new(),
            graphs: HashMap::new(),
            sampling: ModelSampling::new(gpu, options.slots)?,
            prefill_sampled: false,
            decode_sampled: false,
            memory: MemoryReport { weights, kv_cache, workspace },
            defect: None,
            config,
            options,
            embed,
            lm_head,
            norm,
            layers,
            cache,
            rope,
            embed_status,
            attn_status,
            ws,
            reports,
        })
    }
}
