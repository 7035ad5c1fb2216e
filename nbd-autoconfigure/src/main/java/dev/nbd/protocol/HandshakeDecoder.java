package dev.nbd.protocol;

import java.util.List;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;

/**
 * Frames the client side of the fixed newstyle handshake: the client flags, then options.
 * An option longer than {@code maxOptionLength} is skipped as it arrives, never buffered, so a
 * client announcing a 2 GiB option costs nothing; the server answers it with
 * {@code NBD_REP_ERR_TOO_BIG} and haggling goes on.
 */
public class HandshakeDecoder extends SkippingDecoder {

	private enum State {
		CLIENT_FLAGS, OPTION_HEADER, OPTION_DATA, SKIP, FAILED
	}

	private final int maxOptionLength;

	private State state = State.CLIENT_FLAGS;

	private int option;

	private long length;

	private boolean paused;

	public HandshakeDecoder(int maxOptionLength) {
		this.maxOptionLength = maxOptionLength;
	}

	/**
	 * Stops (or resumes) decoding: bytes already received stay buffered. The handler pauses
	 * while its replies are not being read, so options sent in one burst cannot make the
	 * server buffer their replies without bound.
	 */
	public void pause(boolean paused) {
		this.paused = paused;
	}

	public boolean isPaused() {
		return this.paused;
	}

	@Override
	protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
		while (!this.paused) {
			switch (this.state) {
				case CLIENT_FLAGS -> {
					if (in.readableBytes() < 4) {
						return;
					}
					out.add(new ProtocolMessage.ClientFlags(in.readInt()));
					this.state = State.OPTION_HEADER;
					// The handler decides, per flags, whether haggling goes on.
					return;
				}
				case OPTION_HEADER -> {
					if (in.readableBytes() < 16) {
						return;
					}
					long magic = in.readLong();
					if (magic != NbdProtocol.IHAVEOPT) {
						fail(in, out, "bad option magic 0x" + Long.toHexString(magic));
						return;
					}
					this.option = in.readInt();
					this.length = in.readUnsignedInt();
					if (this.length > this.maxOptionLength) {
						skip(this.length);
						this.state = State.SKIP;
					}
					else {
						this.state = State.OPTION_DATA;
					}
				}
				case OPTION_DATA -> {
					if (in.readableBytes() < this.length) {
						return;
					}
					ByteBuf data = in.readRetainedSlice((int) this.length);
					this.state = State.OPTION_HEADER;
					out.add(new ProtocolMessage.Option(this.option, this.length, data));
					// One option at a time: the handler may swap the pipeline (GO, STARTTLS).
					return;
				}
				case SKIP -> {
					if (!skipped(in)) {
						return;
					}
					this.state = State.OPTION_HEADER;
					out.add(new ProtocolMessage.Option(this.option, this.length, null));
					return;
				}
				case FAILED -> {
					in.skipBytes(in.readableBytes());
					return;
				}
			}
		}
	}

	private void fail(ByteBuf in, List<Object> out, String reason) {
		this.state = State.FAILED;
		in.skipBytes(in.readableBytes());
		out.add(new ProtocolMessage.Violation(reason));
	}

}
