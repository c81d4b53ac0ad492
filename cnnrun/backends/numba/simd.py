"""Vector registers in Numba: a type for one register of floats, a transpose of a square tile
in registers, and whole blocks of registers (zeros, the indices of a step's broadcasts, one
step of multiply-adds, their stores), from which the conv kernels' micro-kernels are made.

Why: a micro-kernel keeps its accumulators in registers for the whole sum over the kernel taps
and stores them once. Written as loops over arrays, the accumulators live in memory, and LLVM
loads and stores them on every tap (the wide-row kernels before this module ran at about half
the machine's multiply-add rate for that reason). A :class:`Vec` is an LLVM ``<lanes x float>``
value: Numba keeps it in a local variable like any number, LLVM in a register.

One register holds :data:`VECTOR_BYTES` bytes: 64 (16 float32, 8 float64) where the features
Numba compiles for include AVX-512, 32 otherwise (AVX2: 8 float32). Those are the features
Numba itself uses and keys its cache on: ``NUMBA_CPU_FEATURES`` if set, else the host's (less
AVX with ``NUMBA_ENABLE_AVX=0``); ``NUMBA_CPU_NAME`` alone changes neither. The buffers the
kernels' callers size from this width must match the width compiled into the kernels, so it is
worked out exactly as Numba does.

The loads and stores do no bounds check: the callers size their buffers for whole vectors
(see :mod:`.wide`).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import codegen, config
from numba.extending import intrinsic, models, register_model


def _vector_bytes() -> int:
    """64 where the features Numba compiles for (and keys its cache on) have AVX-512, else
    32: ``NUMBA_CPU_FEATURES`` if set, else the host's as Numba reads them."""
    features = config.CPU_FEATURES
    if features is None:
        features = codegen.get_host_cpu_features()
    return 64 if "+avx512f" in features else 32


VECTOR_BYTES = _vector_bytes()
# vector registers of the ISA of that width: 32 with AVX-512, 16 with AVX2; the micro-kernels
# keep their accumulators, the registers they load and a broadcast within this many
REGISTERS = 32 if VECTOR_BYTES == 64 else 16


class Vec(types.Type):
    """One vector register of ``dtype`` (float32 or float64)."""

    def __init__(self, dtype: types.Float):
        self.dtype = dtype
        self.lanes = VECTOR_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vec({dtype} x {self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type: Vec):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _address(context, builder, array_type, array, index):
    """Pointer to ``array[index]`` of a 1-D contiguous array, as a pointer to a vector."""
    data = context.make_array(array_type)(context, builder, array).data
    vector = context.get_value_type(Vec(array_type.dtype))
    return builder.bitcast(builder.gep(data, [index]), vector.as_pointer())


def _splat(context, builder, vec: Vec, value):
    """``value`` in every lane of a register of type ``vec``."""
    vector = context.get_value_type(vec)
    one = builder.insert_element(
        ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0)
    )
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vec.lanes), [0] * vec.lanes)
    return builder.shuffle_vector(one, ir.Constant(vector, ir.Undefined), mask)


@intrinsic
def lanes(typingctx, a):
    """Elements of ``a``'s dtype in one register (a compile-time constant)."""
    count = Vec(a.dtype).lanes

    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, count)

    return types.intp(a), codegen


@intrinsic
def vtranspose(typingctx, src, src_at, src_stride, dst, dst_at, dst_stride):
    """A square tile of one register by as many rows, transposed: row r of ``dst`` (at
    ``dst_at + r*dst_stride``) gets column r of ``src`` (rows at ``src_at + r*src_stride``);
    1-D contiguous arrays of one dtype. In registers: log2(lanes) rounds, each swapping the
    off-diagonal h-by-h blocks of every 2h-by-2h block, h = lanes/2, ..., 1."""

    def codegen(context, builder, signature, args):
        s_type, d_type = signature.args[0], signature.args[3]
        s, s_at, s_stride, d, d_at, d_stride = args
        count = Vec(s_type.dtype).lanes
        align = s_type.dtype.bitwidth // 8

        def row(array_type, array, at, stride, r):
            index = builder.add(at, builder.mul(stride, context.get_constant(types.intp, r)))
            return _address(context, builder, array_type, array, index)

        rows = [builder.load(row(s_type, s, s_at, s_stride, r), align=align) for r in range(count)]
        h = count // 2
        while h >= 1:
            # lane k of the pair (a, b): a's lanes are 0..n-1, b's n..2n-1 in the mask
            keep = [k if (k // h) % 2 == 0 else count + k - h for k in range(count)]
            swap = [k + h if (k // h) % 2 == 0 else count + k for k in range(count)]
            masks = [ir.Constant(ir.VectorType(ir.IntType(32), count), m) for m in (keep, swap)]
            for r in range(count):
                if (r // h) % 2 == 0:
                    a, b = rows[r], rows[r + h]
                    rows[r] = builder.shuffle_vector(a, b, masks[0])
                    rows[r + h] = builder.shuffle_vector(a, b, masks[1])
            h //= 2
        for r in range(count):
            builder.store(rows[r], row(d_type, d, d_at, d_stride, r), align=align)
        return context.get_dummy_value()

    return types.void(src, src_at, src_stride, dst, dst_at, dst_stride), codegen


# -- blocks of registers: what a register-blocked micro-kernel is made of -----------------------
#
# A block is a G-tuple of B-tuples of registers, G rows (filters, or taps) by B registers of
# lanes (outputs, or filters). The four intrinsics below make the whole of a micro-kernel in
# LLVM IR: written as loops over small inlined helpers, its G*B multiply-adds cost Numba
# an inlining (a copy of the helper's IR, typed again) per call, which took a quarter of the
# compile time of the conv kernels.


def _is_block(t) -> bool:
    """Whether ``t`` is a block: a tuple of tuples of registers, all of one type."""
    return (
        isinstance(t, types.UniTuple)
        and isinstance(t.dtype, types.UniTuple)
        and isinstance(t.dtype.dtype, Vec)
    )


def _is_flat(t, dtype=None, mutable: bool = False) -> bool:
    """Whether ``t`` is a 1-D C-contiguous array (of ``dtype``; writable where ``mutable``):
    the only arrays the block intrinsics address, element by element, without strides."""
    return (
        isinstance(t, types.Array)
        and t.ndim == 1
        and t.layout == "C"
        and (dtype is None or t.dtype == dtype)
        and (t.mutable or not mutable)
    )


def _is_index(t) -> bool:
    return isinstance(t, types.Integer)


def _intp(context, builder, value, of_type):
    return context.cast(builder, value, of_type, types.intp)


def _const(context, value):
    return context.get_constant(types.intp, value)


@intrinsic(prefer_literal=True)
def vzeros(typingctx, like, rows, cols):
    """A block of ``rows`` by ``cols`` zero registers of ``like``'s dtype (compile-time
    constants)."""
    counts = (rows, cols)
    float_array = isinstance(like, types.Array) and isinstance(like.dtype, types.Float)
    if not all(isinstance(c, types.IntegerLiteral) for c in counts) or not float_array:
        return None  # Numba then says no implementation matches these argument types
    row = types.UniTuple(Vec(like.dtype), cols.literal_value)
    block = types.UniTuple(row, rows.literal_value)

    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(block), None)

    return block(like, rows, cols), codegen


@intrinsic
def row_indices(typingctx, a, at, plus, block):
    """``(a[at] + plus, a[at + 1] + plus, ...)``, one for each row of ``block``: indices
    read from a 1-D contiguous integer array."""
    count = block.count

    def codegen(context, builder, signature, args):
        array, start, shift = args[0], args[1], args[2]
        start = _intp(context, builder, start, signature.args[1])
        shift = _intp(context, builder, shift, signature.args[2])
        data = context.make_array(signature.args[0])(context, builder, array).data
        out = ir.Constant(context.get_value_type(signature.return_type), ir.Undefined)
        for j in range(count):
            value = builder.load(builder.gep(data, [builder.add(start, _const(context, j))]))
            value = _intp(context, builder, value, signature.args[0].dtype)
            out = builder.insert_value(out, builder.add(value, shift), j)
        return out

    return types.UniTuple(types.intp, count)(a, at, plus, block), codegen


def _fma(builder, vector):
    """``llvm.fma`` for registers of type ``vector``: ``a * b + c``, rounded once."""
    suffix = "f32" if isinstance(vector.element, ir.FloatType) else "f64"
    return builder.module.declare_intrinsic(
        f"llvm.fma.v{vector.count}{suffix}", fnty=ir.FunctionType(vector, [vector, vector, vector])
    )


def _registers(context, builder, array_type, array, start, count):
    """``count`` registers of a 1-D contiguous array, one after another from ``start``."""
    lanes_, align = Vec(array_type.dtype).lanes, array_type.dtype.bitwidth // 8
    return [
        builder.load(
            _address(
                context, builder, array_type, array, builder.add(start, _const(context, r * lanes_))
            ),
            align=align,
        )
        for r in range(count)
    ]


@intrinsic
def outer_fma(typingctx, acc, a, a_at, a_off, b, b_at):
    """``acc[g][r] + a[i_g] * b[b_at + r*lanes :][:lanes]`` for every row g and register r of
    the block ``acc``, each rounded once (``llvm.fma``): element ``a[i_g]`` broadcast to
    every lane, ``i_g = a_at[g] + a_off`` where ``a_at`` is a tuple of indices, ``a_at + g +
    a_off`` where it is one. The B registers of b are loaded once and each feeds G
    multiply-adds; each broadcast feeds B. 1-D contiguous arrays of the block's dtype."""
    if not _is_block(acc) or not all(_is_flat(x, acc.dtype.dtype.dtype) for x in (a, b)):
        return None
    tuple_at = isinstance(a_at, types.UniTuple) and a_at.count == acc.count
    if not (tuple_at and _is_index(a_at.dtype) or _is_index(a_at)):
        return None
    if not (_is_index(a_off) and _is_index(b_at)):
        return None

    def codegen(context, builder, signature, args):
        block_t, a_t, at_t, off_t, b_t, b_at_t = signature.args
        block, a_arr, at, off, b_arr, start = args
        off = _intp(context, builder, off, off_t)
        start = _intp(context, builder, start, b_at_t)
        regs = _registers(context, builder, b_t, b_arr, start, block_t.dtype.count)
        fma = _fma(builder, regs[0].type)
        data = context.make_array(a_t)(context, builder, a_arr).data
        for g in range(block_t.count):
            if isinstance(at_t, types.BaseTuple):
                index = _intp(context, builder, builder.extract_value(at, g), at_t[g])
            else:
                index = builder.add(_intp(context, builder, at, at_t), _const(context, g))
            element = builder.load(builder.gep(data, [builder.add(index, off)]))
            s = _splat(context, builder, block_t.dtype.dtype, element)
            row = builder.extract_value(block, g)
            for r, reg in enumerate(regs):
                product = builder.call(fma, [s, reg, builder.extract_value(row, r)])
                row = builder.insert_value(row, product, r)
            block = builder.insert_value(block, row, g)
        return block

    return acc(acc, a, a_at, a_off, b, b_at), codegen


@intrinsic
def store_block(typingctx, out, at, stride, block):
    """``out[at + g*stride + r*lanes :][:lanes] = block[g][r]`` for every row g and register
    r, a 1-D contiguous, writable array of the block's dtype."""
    if not _is_block(block) or not _is_flat(out, block.dtype.dtype.dtype, mutable=True):
        return None
    if not (_is_index(at) and _is_index(stride)):
        return None

    def codegen(context, builder, signature, args):
        out_t, at_t, stride_t, block_t = signature.args
        array, start, step, block = args
        start = _intp(context, builder, start, at_t)
        step = _intp(context, builder, step, stride_t)
        lanes_ = block_t.dtype.dtype.lanes
        align = out_t.dtype.bitwidth // 8
        for g in range(block_t.count):
            row_at = builder.add(start, builder.mul(step, _const(context, g)))
            row = builder.extract_value(block, g)
            for r in range(block_t.dtype.count):
                where = builder.add(row_at, _const(context, r * lanes_))
                address = _address(context, builder, out_t, array, where)
                builder.store(builder.extract_value(row, r), address, align=align)
        return context.get_dummy_value()

    return types.void(out, at, stride, block), codegen
