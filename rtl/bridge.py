"""Host bridge: any unit's streams over a UART, in checksummed frames (docs/board.md).

:class:`Bridge` wraps a unit and gives it two pins, ``rx`` and ``tx`` (8N1, ``divisor`` clock
cycles per bit). It walks ``unit.signature``: every stream member becomes a **port** numbered in
signature order; the host writes the payloads of ``In`` streams and reads those of ``Out``
streams. A payload of ``b`` bits travels as ``ceil(b / 8)`` bytes, least significant byte first
(bit ``i`` of the payload is bit ``i % 8`` of byte ``i // 8``, the Amaranth layout's own bit
order; :class:`attnforge.testbench.kit.Codec` packs fields on the host).

Frame (both directions)::

    SOF  TYPE  SEQ  PORT  LEN  payload[LEN]  CRC_HI  CRC_LO

``SOF`` is 0x7E; the CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final
xor) over ``TYPE .. payload``, sent high byte first, so the CRC run over ``TYPE .. CRC_LO`` is
zero (what the receiver checks). There is no byte stuffing: a receiver that loses its place hunts
for the next ``SOF``, and the bridge drops a half-received frame after ``idle_bytes`` byte times
of silence, so a host that waits longer than that before retrying always finds the bridge
hunting. A garbage byte that looks like ``SOF`` starts a frame whose CRC fails.

Requests (host -> bridge) and the answer to each (stop and wait: one request in flight):

========  ==================  =====================================================================
request   payload             answer
========  ==================  =====================================================================
WRITE     the port's bytes    ACK (taken into the port's 1-entry slot) or BUSY (slot full: nothing
                              taken; the host retries later with a new sequence number)
READ      none                DATA (the port's payload; the slot is emptied) or EMPTY
RESET     none                ACK; the unit, every slot and the sequence memory are reset
INFO      none                INFO: ``version, n_ports, (dir, bytes) per port, ident``
========  ==================  =====================================================================

A frame with a bad CRC, an unknown type, a wrong port or a wrong length is answered with NAK
(and has no effect). **Sequence numbers** make retries safe: the bridge remembers the sequence
number and the answer of the last request it executed; a request carrying that same number is a
retransmission (its answer was lost), so the bridge sends the remembered answer again without
executing it a second time -- a WRITE is never taken twice and a READ never skips a payload. The
host gives every new request the next number (mod 256), so consecutive requests always differ.

Timing: the bridge answers in the cycle after a request's last CRC byte (plus the UART); the
unit sees a write in its slot the cycle after the answer starts. ``Out`` slots take the unit's
output whenever empty, so a unit stalls (back-pressure) until the host reads.
"""

from amaranth.hdl import (Cat, Const, Module, Mux, ResetInserter, Shape, Signal, Value,
                          unsigned)
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["SOF", "WRITE", "READ", "RESET", "INFO", "ACK", "BUSY", "DATA", "EMPTY", "NAK",
           "ANSWER_INFO", "PROTOCOL_VERSION", "IDLE_BYTES", "crc16", "crc16_byte", "stream_ports",
           "payload_bits", "payload_bytes", "port_of", "frame_layout", "descriptor", "UARTRx",
           "UARTTx", "FrameDecoder", "FrameEncoder", "Slot", "Bridge"]

SOF = 0x7E
#: Request types (host -> bridge).
WRITE, READ, RESET, INFO = 0x01, 0x02, 0x03, 0x04
#: Answer types (bridge -> host).
ACK, BUSY, DATA, EMPTY, NAK, ANSWER_INFO = 0x81, 0x82, 0x83, 0x84, 0x85, 0x86
PROTOCOL_VERSION = 1
#: Default byte times of silence after which the bridge drops a half-received frame.
IDLE_BYTES = 16
#: Header bytes after SOF (TYPE, SEQ, PORT, LEN) and CRC bytes.
HEADER, CRC_BYTES = 4, 2


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of ``data`` (bytes) -- the golden model of :func:`crc16_byte`."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def crc16_byte(crc, byte):
    """Amaranth expression: ``crc`` (16 bits) updated with ``byte`` (8 bits), as :func:`crc16`.

    The CRC is linear over GF(2): each output bit is the XOR of some ``crc`` and ``byte`` bits.
    They are worked out symbolically here (bit sets), so the logic is 16 XOR trees rather than
    eight nested muxes (whose expression tree doubles at every step)."""
    # state bit -> set of input bits; inputs 0..15 = crc, 16..23 = byte
    c = [{i} for i in range(16)]
    for i in range(8):
        c[8 + i] = c[8 + i] ^ {16 + i}
    for _ in range(8):
        top = c[15]
        c = [set()] + c[:15]
        for b in (0, 5, 12):                     # 0x1021
            c[b] = c[b] ^ top
    inputs = Cat(crc, byte)
    out = []
    for bits in c:
        terms = [inputs[i] for i in sorted(bits)]
        x = terms[0]
        for t in terms[1:]:
            x = x ^ t
        out.append(x)
    return Cat(*out)


def payload_bytes(bits):
    """Bytes a payload of ``bits`` bits occupies on the wire."""
    return (bits + 7) // 8


def stream_ports(unit):
    """``[(name, flow, stream signature), ...]`` of ``unit``'s streams in signature order (the
    port ids): its stream members, and the streams inside interface members and arrays of them
    (``g[0].cmd``: member ``g``, element 0, its stream ``cmd``; ``flow`` is the direction seen
    from outside the unit). A member that is neither raises ``ValueError``: the bridge carries
    streams only."""
    ports = []

    def walk(sig, flow, path):
        for name, member in sig.members.items():
            where = f"{path}.{name}" if path else name
            own = flow if member.flow == Out else flow.flip()
            inner = member.signature if member.is_signature else None
            if inner is not None and member.flow == In:
                inner = inner.flip()             # In members read flipped; keep their own
            if inner is None or isinstance(inner, wiring.FlippedSignature):
                raise ValueError(f"the bridge carries stream members only; "
                                 f"{type(unit).__name__}.{where} is not a stream")
            names = [where]
            for size in member.dimensions:
                names = [f"{n}[{i}]" for n in names for i in range(size)]
            for n in names:
                if isinstance(inner, stream.Signature):
                    ports.append((n, own, inner))
                else:
                    walk(inner, own, n)

    walk(unit.signature, Out, "")
    if len(ports) > 120:
        raise ValueError(f"the bridge carries at most 120 streams, not {len(ports)}")
    return ports


def port_of(unit, name):
    """The interface object of ``unit``'s stream port ``name`` (as :func:`stream_ports` names
    it: ``o``, ``g[0].cmd``)."""
    obj = unit
    for part in name.split("."):
        attr, *indices = part.replace("]", "").split("[")
        obj = getattr(obj, attr)
        for i in indices:
            obj = obj[int(i)]
    return obj


def descriptor(unit, ident=b""):
    """The INFO payload: version, port count, ``(0 = In / 1 = Out, bytes)`` per port, ``ident``
    (host and bridge compute it the same way, so the host can check the design it talks to)."""
    body = [PROTOCOL_VERSION, 0]
    for _name, flow, sig in stream_ports(unit):
        nbytes = payload_bytes(payload_bits(sig))
        if nbytes > 255:
            raise ValueError(f"a bridge port carries at most 255 bytes, not {nbytes}")
        body += [0 if flow == In else 1, nbytes]
    body[1] = (len(body) - 2) // 2
    return bytes(body) + bytes(ident)


def payload_bits(sig):
    """Width in bits of a stream signature's payload."""
    return Shape.cast(sig.members["payload"].shape).width


def byte_stream():
    """A stream of bytes with no back-pressure (a UART receiver cannot wait)."""
    return stream.Signature(8, always_ready=True)


class UARTRx(wiring.Component):
    """8N1 receiver: ``rx`` pin -> ``o`` (one byte per valid cycle, never waits).

    ``rx`` is synchronized (2 flip-flops); a falling edge starts a byte, every bit is sampled in
    its middle; a byte whose stop bit is 0 (framing error) is dropped."""

    def __init__(self, divisor):
        if divisor < 4:
            raise ValueError(f"divisor must be at least 4 clock cycles per bit, not {divisor}")
        self._divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(byte_stream())})

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(d + d // 2 + 1))
        bit = Signal(range(10))
        shift = Signal(8)
        busy = Signal()
        m.d.sync += self.o.valid.eq(0)
        with m.If(~busy):
            with m.If(~rx):                       # start bit: sample bit 0 in 1.5 bit times
                m.d.sync += [busy.eq(1), timer.eq(d + d // 2 - 1), bit.eq(0)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [timer.eq(d - 1), bit.eq(bit + 1)]
            with m.If(bit < 8):
                m.d.sync += shift.eq(Cat(shift[1:], rx))
            with m.Else():                        # stop bit
                m.d.sync += [busy.eq(0), self.o.valid.eq(rx), self.o.payload.eq(shift)]
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: ``i`` (one byte at a time) -> ``tx`` pin (idle high)."""

    def __init__(self, divisor):
        self._divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        shift = Signal(10, init=0x3FF)
        left = Signal(range(11))
        timer = Signal(range(d))
        m.d.comb += [self.tx.eq(shift[0]), self.i.ready.eq(left == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shift.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                         left.eq(10), timer.eq(d - 1)]
        with m.Elif(left != 0):
            with m.If(timer == 0):
                m.d.sync += [shift.eq(Cat(shift[1:], Const(1, 1))), left.eq(left - 1),
                             timer.eq(d - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


def frame_layout(max_len, *, ok=False):
    """An answer to send (:class:`FrameEncoder`) or, with ``ok``, a decoded request
    (:class:`FrameDecoder`; ``ok``: CRC right and ``LEN <= max_len``)."""
    fields = {"type": 8, "seq": 8, "port": 8, "len": 8,
              "data": max(max_len, 1) * 8}          # payload bytes, byte 0 in the low bits
    return data.StructLayout({**fields, "ok": 1} if ok else fields)


class FrameDecoder(wiring.Component):
    """Bytes -> frames. Hunts for SOF, reads the header, ``LEN`` payload bytes and the CRC, and
    presents the frame (``ok`` = CRC right and ``LEN <= max_len``; a longer LEN makes the frame
    end at once, not ok). A frame not yet taken makes the decoder drop incoming bytes; a frame
    left unfinished for ``idle_cycles`` is dropped and the decoder hunts again."""

    def __init__(self, max_len, idle_cycles):
        self._max_len, self._idle = max(max_len, 1), idle_cycles
        super().__init__({"i": In(byte_stream()),
                          "o": Out(stream.Signature(frame_layout(max_len, ok=True)))})

    def elaborate(self, platform):
        m = Module()
        n = self._max_len
        f = self.o.payload
        # No Array indexing and no Switch: plain if-chains keep Verilator's CASEINCOMPLETE quiet.
        buf = [Signal(8, name=f"buf{i}") for i in range(n)]
        m.d.comb += f.data.eq(Cat(*buf))
        HUNT, HDR, BODY, CRC = range(4)
        state = Signal(range(4))
        idx = Signal(range(max(n, HEADER) + 1))
        crc = Signal(16)
        idle = Signal(range(self._idle + 1))
        byte = self.i.payload
        crc_next = crc16_byte(crc, byte)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(state != HUNT):
            m.d.sync += idle.eq(idle + 1)
            with m.If(idle == self._idle):
                m.d.sync += state.eq(HUNT)
        with m.If(self.i.valid):
            m.d.sync += [idle.eq(0), crc.eq(crc_next), idx.eq(idx + 1)]
            with m.If(state == HUNT):
                with m.If((byte == SOF) & ~self.o.valid):
                    m.d.sync += [state.eq(HDR), idx.eq(0), crc.eq(0xFFFF)]
            with m.Elif(state == HDR):
                for i, field in enumerate([f.type, f.seq, f.port, f.len]):
                    with m.If(idx == i):
                        m.d.sync += field.eq(byte)
                with m.If(idx == HEADER - 1):
                    m.d.sync += idx.eq(0)
                    with m.If(byte > n):              # cannot hold it: end the frame, not ok
                        m.d.sync += [state.eq(HUNT), self.o.valid.eq(1), f.ok.eq(0)]
                    with m.Elif(byte == 0):
                        m.d.sync += state.eq(CRC)
                    with m.Else():
                        m.d.sync += state.eq(BODY)
            with m.Elif(state == BODY):
                for i in range(n):
                    with m.If(idx == i):
                        m.d.sync += buf[i].eq(byte)
                with m.If(idx == f.len - 1):
                    m.d.sync += [state.eq(CRC), idx.eq(0)]
            with m.Else():                            # CRC
                with m.If(idx == CRC_BYTES - 1):
                    m.d.sync += [state.eq(HUNT), self.o.valid.eq(1), f.ok.eq(crc_next == 0)]
        return m


class FrameEncoder(wiring.Component):
    """Frames -> bytes: SOF, header, ``len`` bytes of ``data`` (byte 0 first), CRC high, low."""

    def __init__(self, max_len):
        self._max_len = max(max_len, 1)
        super().__init__({"i": In(stream.Signature(frame_layout(max_len))),
                          "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        n = self._max_len
        f = Signal(frame_layout(n))
        busy = Signal()
        pos = Signal(range(n + HEADER + CRC_BYTES + 2))      # byte of the frame being sent
        crc = Signal(16)
        m.d.comb += self.i.ready.eq(~busy)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [f.eq(self.i.payload), busy.eq(1), pos.eq(0), crc.eq(0xFFFF)]
        body = Cat(f.type, f.seq, f.port, f.len, f.data)
        end = f.len + HEADER + 1                             # position of CRC_HI
        byte = Signal(8)
        with m.If(pos == 0):
            m.d.comb += byte.eq(SOF)
        with m.Elif(pos < end):
            m.d.comb += byte.eq(body.word_select((pos - 1)[:len(pos)], 8))
        with m.Elif(pos == end):
            m.d.comb += byte.eq(crc[8:])
        with m.Else():
            m.d.comb += byte.eq(crc[:8])
        m.d.comb += [self.o.valid.eq(busy), self.o.payload.eq(byte)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += pos.eq(pos + 1)
            with m.If((pos != 0) & (pos < end)):
                m.d.sync += crc.eq(crc16_byte(crc, byte))
            with m.If(pos == end + 1):
                m.d.sync += busy.eq(0)
        return m


class Slot(wiring.Component):
    """A 1-entry stream register between the bridge and one unit port (``i`` -> ``o``; the
    payload bits are copied as they are). ``i.ready`` is high while it is empty."""

    def __init__(self, i_sig, o_sig):
        super().__init__({"i": In(i_sig), "o": Out(o_sig)})

    def elaborate(self, platform):
        m = Module()
        full = Signal()
        payload = Signal(Value.cast(self.o.payload).shape().width)
        m.d.comb += [self.i.ready.eq(~full), self.o.valid.eq(full),
                     self.o.payload.eq(payload)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [full.eq(1), payload.eq(self.i.payload)]
        return m


class Bridge(wiring.Component):
    """``unit`` behind a UART host bridge (see the module docstring for the protocol).

    Parameters
    ----------
    unit : wiring.Component
        Every member must be a stream (``stream_ports``).
    divisor : int
        Clock cycles per UART bit (>= 4): ``round(f_clk / baud)``.
    idle_bytes : int
        Byte times of silence after which a half-received frame is dropped (default 16).
    ident : bytes
        Appended to the INFO answer (the host checks it: which unit, which parameters).

    Members: ``rx`` (In, 1), ``tx`` (Out, 1).
    """

    def __init__(self, unit, *, divisor, idle_bytes=IDLE_BYTES, ident=b""):
        self._unit = unit
        self._ports = stream_ports(unit)
        self._bytes = [payload_bytes(payload_bits(sig)) for _, _, sig in self._ports]
        self._divisor = divisor
        self._idle = idle_bytes * 10 * divisor
        self._info = descriptor(unit, ident)
        if len(self._info) > 255:
            raise ValueError("too many ports for one INFO frame")
        ins = [b for (_, flow, _), b in zip(self._ports, self._bytes) if flow == In]
        outs = [b for (_, flow, _), b in zip(self._ports, self._bytes) if flow == Out]
        self._rx_len = max(ins, default=1)
        self._tx_len = max(outs + [len(self._info)])
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    @property
    def ports(self):
        """``[(name, "in" | "out", bytes), ...]``: port id = list index."""
        return [(name, "in" if flow == In else "out", b)
                for (name, flow, _), b in zip(self._ports, self._bytes)]

    @property
    def info(self):
        """The INFO answer's payload."""
        return self._info

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self._divisor)
        m.submodules.uart_tx = utx = UARTTx(self._divisor)
        m.submodules.decoder = dec = FrameDecoder(self._rx_len, self._idle)
        m.submodules.encoder = enc = FrameEncoder(self._tx_len)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        wiring.connect(m, urx.o, dec.i)
        wiring.connect(m, enc.o, utx.i)

        # The unit and its slots share a reset that RESET requests pulse.
        unit_rst = Signal()
        m.submodules.unit = ResetInserter(unit_rst)(self._unit)
        slots = []
        for pid, ((name, flow, sig), nbytes) in enumerate(zip(self._ports, self._bytes)):
            raw = stream.Signature(unsigned(payload_bits(sig)))
            port = port_of(self._unit, name)
            if flow == In:
                slot = Slot(raw, sig)
                wiring.connect(m, slot.o, port)
            else:
                slot = Slot(sig, raw)
                wiring.connect(m, port, slot.i)
            m.submodules["slot_" + "".join(c if c.isalnum() else "_" for c in name)] = \
                ResetInserter(unit_rst)(slot)
            slots.append((pid, flow, nbytes, slot))
        self._dispatch(m, dec, enc, slots, unit_rst)
        return m

    def _dispatch(self, m, dec, enc, slots, unit_rst):
        """Answer the decoder's frame in the cycle the encoder can take the answer."""
        f, a = dec.o.payload, enc.i.payload
        last_seq, have_last = Signal(8), Signal()
        last_type, last_port, last_len = Signal(8), Signal(8), Signal(8)
        reply = Signal(self._tx_len * 8)
        take = Signal()
        m.d.comb += [dec.o.ready.eq(enc.i.ready), enc.i.valid.eq(dec.o.valid),
                     take.eq(dec.o.valid & enc.i.ready)]
        m.d.sync += unit_rst.eq(0)
        m.d.comb += [a.seq.eq(f.seq), a.port.eq(f.port), a.len.eq(0), a.type.eq(NAK),
                     a.data.eq(reply)]
        record = Signal()
        with m.If(~f.ok):
            pass                                            # NAK, not remembered
        with m.Elif(have_last & (f.seq == last_seq) & ((f.type == WRITE) | (f.type == READ))):
            m.d.comb += [a.type.eq(last_type), a.port.eq(last_port), a.len.eq(last_len)]
        with m.Elif(f.type == WRITE):
            for pid, flow, nbytes, slot in slots:
                if flow != In:
                    continue
                with m.If((f.port == pid) & (f.len == nbytes)):
                    m.d.comb += [record.eq(1), slot.i.payload.eq(f.data),
                                 a.type.eq(Mux(slot.i.ready, ACK, BUSY))]
                    m.d.comb += slot.i.valid.eq(take)
        with m.Elif(f.type == READ):
            for pid, flow, nbytes, slot in slots:
                if flow != Out:
                    continue
                with m.If((f.port == pid) & (f.len == 0)):
                    m.d.comb += [record.eq(1), a.type.eq(Mux(slot.o.valid, DATA, EMPTY)),
                                 a.len.eq(Mux(slot.o.valid, nbytes, 0)),
                                 a.data.eq(slot.o.payload), slot.o.ready.eq(take)]
        with m.Elif((f.type == RESET) & (f.len == 0)):
            m.d.comb += a.type.eq(ACK)
            with m.If(take):
                m.d.sync += [unit_rst.eq(1), have_last.eq(0)]
        with m.Elif((f.type == INFO) & (f.len == 0)):
            m.d.comb += [a.type.eq(ANSWER_INFO), a.len.eq(len(self._info)),
                         a.data.eq(int.from_bytes(self._info, "little"))]
        with m.If(take & record):
            m.d.sync += [have_last.eq(1), last_seq.eq(f.seq), last_type.eq(a.type),
                         last_port.eq(a.port), last_len.eq(a.len), reply.eq(a.data)]
