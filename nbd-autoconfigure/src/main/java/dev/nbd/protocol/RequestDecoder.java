package dev.nbd.protocol;

import java.util.List;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.CompositeByteBuf;
import io.netty.channel.ChannelHandlerContext;

/**
 * Frames transmission requests: a 28-byte header, then the payload of a WRITE. A WRITE whose
 * length exceeds {@code maxPayload} is not buffered: its bytes are discarded as they arrive and
 * the request is passed on without payload, so the server can answer it with an error and keep
 * the connection in sync. A bad magic cannot be resynchronised and ends the stream.
 *
 * <p>A payload that has fully arrived is passed on as a slice of the received bytes (no copy).
 * Memory for one still arriving is taken as its bytes arrive, never for its declared length up
 * front (a client could declare 32 MiB and send nothing): it is either gathered into a buffer of
 * its own that doubles as it fills, so the decoder's cumulation is not grown and copied again
 * with every socket read of a large WRITE, or, with
 * {@code payloadInPieces}, kept as the received buffers themselves (a composite buffer, no copy)
 * for backends that take a payload in pieces. Received pieces under {@link #MIN_PIECE} bytes, or
 * filling less than a quarter of their buffer, are still copied together, so a client trickling
 * bytes can neither make thousands of components nor pin large, mostly empty buffers.
 * {@link #gathering()} tells what a partial payload holds, for the server's memory accounting.
 */
public class RequestDecoder extends SkippingDecoder {

	private enum State {
		HEADER, PAYLOAD, SKIP, FAILED
	}

	/** Smallest received buffer kept as a piece of its own; smaller ones are copied together. */
	static final int MIN_PIECE = 16 * 1024;

	/** First capacity of a payload gathered into a buffer of its own. */
	static final int INITIAL_GATHER = 64 * 1024;

	private final int maxPayload;

	private final boolean payloadInPieces;

	private State state = State.HEADER;

	private int flags;

	private int type;

	private long cookie;

	private long offset;

	private long length;

	/** Payload of the WRITE being gathered, or null. */
	private ByteBuf payload;

	/** With payloadInPieces: small received pieces being copied together, not yet in payload. */
	private ByteBuf tail;

	/** Bytes held for the payload being gathered; read by other threads for accounting. */
	private volatile long gathering;

	/** Bytes of the payload being gathered still to arrive; read by other threads. */
	private volatile long remaining;

	public RequestDecoder(int maxPayload) {
		this(maxPayload, false);
	}

	public RequestDecoder(int maxPayload, boolean payloadInPieces) {
		this.maxPayload = maxPayload;
		this.payloadInPieces = payloadInPieces;
	}

	@Override
	protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
		while (true) {
			switch (this.state) {
				case HEADER -> {
					if (in.readableBytes() < NbdProtocol.REQUEST_HEADER_LENGTH) {
						return;
					}
					int magic = in.readInt();
					if (magic != NbdProtocol.REQUEST_MAGIC) {
						this.state = State.FAILED;
						in.skipBytes(in.readableBytes());
						out.add(new ProtocolMessage.Violation("bad request magic 0x" + Integer.toHexString(magic)));
						return;
					}
					this.flags = in.readUnsignedShort();
					this.type = in.readUnsignedShort();
					this.cookie = in.readLong();
					this.offset = in.readLong();
					this.length = in.readUnsignedInt();
					if (this.type != NbdProtocol.CMD_WRITE) {
						out.add(new ProtocolMessage.Request(this.flags, this.type, this.cookie, this.offset, this.length,
								null));
					}
					else if (this.length > this.maxPayload) {
						skip(this.length);
						this.state = State.SKIP;
					}
					else {
						this.state = State.PAYLOAD;
					}
				}
				case PAYLOAD -> {
					ByteBuf data;
					if (this.payload == null && in.readableBytes() >= this.length) {
						data = in.readRetainedSlice((int) this.length);
					}
					else {
						if (!in.isReadable()) {
							return;
						}
						if (this.payload == null) {
							this.payload = this.payloadInPieces ? ctx.alloc().compositeDirectBuffer(Integer.MAX_VALUE)
									: ctx.alloc().directBuffer(
											(int) Math.min(this.length, Math.max(in.readableBytes(), INITIAL_GATHER)),
											(int) this.length);
						}
						boolean complete = gather(ctx, in);
						this.gathering = complete ? 0 : held();
						this.remaining = complete ? 0 : this.length - arrived();
						if (!complete) {
							return;
						}
						data = this.payload;
						this.payload = null;
					}
					this.state = State.HEADER;
					out.add(new ProtocolMessage.Request(this.flags, this.type, this.cookie, this.offset, this.length,
							data));
				}
				case SKIP -> {
					if (!skipped(in)) {
						return;
					}
					this.state = State.HEADER;
					out.add(new ProtocolMessage.Request(this.flags, this.type, this.cookie, this.offset, this.length,
							null));
				}
				case FAILED -> {
					in.skipBytes(in.readableBytes());
					return;
				}
			}
		}
	}

	/** Adds what has arrived of the payload; true once all of it has. */
	private boolean gather(ChannelHandlerContext ctx, ByteBuf in) {
		if (!(this.payload instanceof CompositeByteBuf pieces)) {
			int n = Math.min(in.readableBytes(), (int) this.length - this.payload.writerIndex());
			if (n > this.payload.writableBytes()) {
				// Doubling: a 32 MiB payload is copied about once in all, not once per socket read.
				this.payload.capacity((int) Math.min(this.length,
						Math.max(2L * this.payload.capacity(), this.payload.writerIndex() + (long) n)));
			}
			this.payload.writeBytes(in, n);
			return this.payload.writerIndex() == this.length;
		}
		int missing = (int) this.length - pieces.readableBytes() - ((this.tail != null) ? this.tail.readableBytes() : 0);
		int n = Math.min(in.readableBytes(), missing);
		// A piece keeps its whole received buffer alive: only worth it when the piece fills most
		// of it, so that retained memory stays within a small multiple of the payload.
		if (n >= MIN_PIECE && n >= in.capacity() / 4) {
			addTail(pieces);
			pieces.addComponent(true, in.readRetainedSlice(n));
		}
		else {
			if (this.tail != null && this.tail.writableBytes() < n) {
				addTail(pieces);
			}
			if (this.tail == null) {
				this.tail = ctx.alloc().directBuffer(Math.min(missing, 4 * MIN_PIECE));
			}
			this.tail.writeBytes(in, n);
		}
		if (n < missing) {
			return false;
		}
		addTail(pieces);
		return true;
	}

	private long arrived() {
		return (this.payload instanceof CompositeByteBuf pieces)
				? pieces.readableBytes() + ((this.tail != null) ? this.tail.readableBytes() : 0)
				: this.payload.writerIndex();
	}

	/** Bytes of a WRITE payload still to arrive (0 when none is being gathered); any thread. */
	public long payloadRemaining() {
		return this.remaining;
	}

	/** Memory the partial payload holds. */
	private long held() {
		if (this.payload instanceof CompositeByteBuf pieces) {
			return pieces.readableBytes() + ((this.tail != null) ? this.tail.capacity() : 0);
		}
		return this.payload.capacity();
	}

	/**
	 * Bytes of memory held for a WRITE payload still arriving (0 when none). Safe to call from
	 * any thread; the value may be a moment old.
	 */
	public long gathering() {
		return this.gathering;
	}

	private void addTail(CompositeByteBuf pieces) {
		if (this.tail != null) {
			pieces.addComponent(true, this.tail);
			this.tail = null;
		}
	}

	@Override
	protected void handlerRemoved0(ChannelHandlerContext ctx) {
		this.gathering = 0;
		this.remaining = 0;
		if (this.payload != null) {
			this.payload.release();
			this.payload = null;
		}
		if (this.tail != null) {
			this.tail.release();
			this.tail = null;
		}
	}

}
