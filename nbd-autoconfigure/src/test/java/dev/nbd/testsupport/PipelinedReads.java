package dev.nbd.testsupport;

import java.io.EOFException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.SocketException;
import java.util.LinkedHashMap;
import java.util.concurrent.CompletableFuture;
import java.util.Map;
import java.time.Duration;
import java.util.function.BooleanSupplier;
import java.util.function.LongToIntFunction;

import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * READs sent back to back on a {@link RawNbdClient} (simple replies), and their replies counted
 * as they arrive: how many came whole with the right data, how many as {@code NBD_ESHUTDOWN},
 * before the stream ended. For drain tests, where a reply cut short is the failure to catch.
 */
public final class PipelinedReads {

	private final Map<Long, Long> offsets = new LinkedHashMap<>();

	private final LongToIntFunction expected;

	private int length;

	private int data;

	private int shutdown;

	/** {@code expected} gives the byte the export holds at an offset. */
	public PipelinedReads(LongToIntFunction expected) {
		this.expected = expected;
	}

	/**
	 * Sends {@code count} READs of {@code length} bytes at consecutive offsets from 0, all in one
	 * write, so the server receives them together (cookies 1 to {@code count}; nothing else may
	 * be sent on the client before their replies are in).
	 */
	public PipelinedReads send(RawNbdClient client, int count, int length) throws IOException {
		write(client, requests(count, length));
		return this;
	}

	/** As {@link #send}, with NBD_CMD_DISC right after the READs, in the same write. */
	public PipelinedReads sendThenDisconnect(RawNbdClient client, int count, int length) throws IOException {
		java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
		bytes.writeBytes(requests(count, length));
		bytes.writeBytes(RawNbdClient.request(0, NbdProtocol.CMD_DISC, 0, 0, 0));
		write(client, bytes.toByteArray());
		return this;
	}

	/**
	 * As {@link #send}, writing from another thread: for more requests than the socket buffers
	 * hold while the server, its replies unread, has stopped reading.
	 */
	public CompletableFuture<Void> sendInBackground(RawNbdClient client, int count, int length) {
		byte[] requests = requests(count, length);
		return CompletableFuture.runAsync(() -> {
			try {
				write(client, requests);
			}
			catch (IOException ex) {
				throw new UncheckedIOException(ex);
			}
		});
	}

	private byte[] requests(int count, int length) {
		java.io.ByteArrayOutputStream requests = new java.io.ByteArrayOutputStream();
		for (int i = 0; i < count; i++) {
			long offset = (long) i * length;
			long cookie = i + 1;
			requests.writeBytes(RawNbdClient.request(0, NbdProtocol.CMD_READ, cookie, offset, length));
			this.offsets.put(cookie, offset);
		}
		this.length = length;
		return requests.toByteArray();
	}

	private static void write(RawNbdClient client, byte[] requests) throws IOException {
		client.output().write(requests);
		client.output().flush();
	}

	/**
	 * Receives a reply per READ sent, checking data replies byte by byte (a sample of them),
	 * until all arrived or the server ended the stream.
	 */
	public PipelinedReads receive(RawNbdClient client) throws IOException {
		return receive(client, this.offsets.size());
	}

	/** As {@link #receive(RawNbdClient)}, stopping once {@code total} replies have arrived. */
	public PipelinedReads receive(RawNbdClient client, int total) throws IOException {
		try {
			for (int i = this.data + this.shutdown; i < Math.min(total, this.offsets.size()); i++) {
				RawNbdClient.Reply reply = client.readReply(this.length);
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

	/**
	 * Receives like a client that pauses once: {@code before} replies, then nothing until the
	 * server has handed it every reply ({@code allHandedOver}, e.g. nothing in flight on the
	 * connection), then the rest. With a {@link #smallWindowClient} and the last replies small
	 * enough to be all handed over, a server that closes as soon as nothing is in flight cuts off
	 * what still waits in its buffers.
	 */
	public PipelinedReads receiveWithAPause(RawNbdClient client, int before, BooleanSupplier allHandedOver)
			throws IOException {
		receive(client, before);
		await().atMost(Duration.ofSeconds(60)).until(allHandedOver::getAsBoolean);
		return receive(client);
	}

	/** Attaches to {@code export} with a 64 KiB receive buffer: what the client has not read stays in the server. */
	public static RawNbdClient smallWindowClient(int port, String export) throws IOException {
		RawNbdClient client = RawNbdClient.connect(port, 64 * 1024);
		try {
			client.handshake();
			client.go(export);
			return client;
		}
		catch (IOException | RuntimeException ex) {
			client.close();
			throw ex;
		}
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
