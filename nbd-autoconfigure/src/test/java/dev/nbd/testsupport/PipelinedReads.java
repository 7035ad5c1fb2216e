package dev.nbd.testsupport;

import java.io.EOFException;
import java.io.IOException;
import java.net.SocketException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.LongToIntFunction;

import dev.nbd.protocol.NbdError;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * READs sent back to back on a {@link RawNbdClient} (simple replies), and their replies counted
 * as they arrive: how many came whole with the right data, how many as {@code NBD_ESHUTDOWN},
 * before the stream ended. For drain tests, where a reply cut short is the failure to catch.
 */
public final class PipelinedReads {

	private final Map<Long, Long> offsets = new LinkedHashMap<>();

	private final LongToIntFunction expected;

	private int data;

	private int shutdown;

	/** {@code expected} gives the byte the export holds at an offset. */
	public PipelinedReads(LongToIntFunction expected) {
		this.expected = expected;
	}

	/** Sends {@code count} READs of {@code length} bytes at consecutive offsets from 0. */
	public PipelinedReads send(RawNbdClient client, int count, int length) throws IOException {
		for (int i = 0; i < count; i++) {
			long offset = (long) i * length;
			this.offsets.put(client.sendRead(offset, length), offset);
		}
		return this;
	}

	/**
	 * Receives a reply per READ sent, checking data replies byte by byte (a sample of them),
	 * until all arrived or the server ended the stream.
	 */
	public PipelinedReads receive(RawNbdClient client) throws IOException {
		try {
			for (int i = this.data + this.shutdown; i < this.offsets.size(); i++) {
				RawNbdClient.Reply reply = client.receive();
				Long offset = this.offsets.get(reply.cookie());
				assertThat(offset).as("reply to cookie %d", reply.cookie()).isNotNull();
				if (reply.error() == NbdError.ESHUTDOWN.code()) {
					this.shutdown++;
					continue;
				}
				assertThat(reply.error()).as("error of the READ at %d", offset).isZero();
				for (int j = 0; j < reply.data().length; j += 4093) {
					assertThat(reply.data()[j]).as("byte at %d", offset + j)
						.isEqualTo((byte) this.expected.applyAsInt(offset + j));
				}
				this.data++;
			}
		}
		catch (EOFException | SocketException ex) {
			// Cut off: the counts say how far it got.
		}
		return this;
	}

	/** READs sent. */
	public int sent() {
		return this.offsets.size();
	}

	/** Replies that arrived whole with their data. */
	public int data() {
		return this.data;
	}

	/** Replies that arrived whole: with data or as {@code NBD_ESHUTDOWN}. */
	public int answered() {
		return this.data + this.shutdown;
	}

}
