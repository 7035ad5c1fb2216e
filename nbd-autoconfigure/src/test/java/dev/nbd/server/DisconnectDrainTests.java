package dev.nbd.server;

import java.nio.ByteBuffer;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.PipelinedReads;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * NBD_CMD_DISC with replies still on their way: the spec says the server must handle the
 * outstanding requests before it closes, so every reply arrives complete and only then does the
 * socket end. The replies are far larger than the socket buffers, so the server has to wait for
 * the client to read them rather than close with them queued.
 */
class DisconnectDrainTests {

	private static final int MIB = 1024 * 1024;

	private final MemoryBackend backend = new MemoryBackend("mem", 32 * MIB);

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	@BeforeEach
	void start() throws Exception {
		// A byte pattern that differs per MiB, so a reply from the wrong place or cut short shows.
		byte[] pattern = new byte[MIB];
		for (int mib = 0; mib < 32; mib++) {
			for (int i = 0; i < MIB; i++) {
				pattern[i] = (byte) (i * 31 + mib);
			}
			this.backend.write((long) mib * MIB, ByteBuffer.wrap(pattern), false);
		}
		this.server = this.servers.start(this.backend);
	}

	@Test
	void discRightAfterA32MibReadDeliversTheWholeReply() throws Exception {
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), "mem")) {
			long cookie = client.sendRead(0, 32 * MIB);
			client.send(NbdProtocol.CMD_DISC, 0, 0, null);
			// Count every byte up to the end of the stream: header and data, nothing missing.
			byte[] sink = new byte[256 * 1024];
			long received = 0;
			int n;
			java.io.ByteArrayOutputStream head = new java.io.ByteArrayOutputStream();
			while ((n = client.input().read(sink)) > 0) {
				if (head.size() < 16 + MIB) {
					head.write(sink, 0, (int) Math.min(n, 16 + MIB - head.size()));
				}
				received += n;
			}
			assertThat(received).as("reply bytes before the server closed").isEqualTo(16L + 32 * MIB);
			ByteBuffer reply = ByteBuffer.wrap(head.toByteArray());
			assertThat(reply.getInt()).isEqualTo(NbdProtocol.SIMPLE_REPLY_MAGIC);
			assertThat(reply.getInt()).isZero();
			assertThat(reply.getLong()).isEqualTo(cookie);
			assertThat(reply.get(16 + 12345)).isEqualTo(expected(12345));
		}
	}

	@Test
	void discAfterSixteenPipelinedReadsAnswersAllSixteen() throws Exception {
		try (RawNbdClient client = PipelinedReads.smallWindowClient(this.server.port(), "mem")) {
			// In one write: the server receives the DISC while most replies still wait to be sent.
			PipelinedReads reads = new PipelinedReads(DisconnectDrainTests::expected).sendThenDisconnect(client, 16,
					MIB);
			// Every READ came before the DISC: each is served with its data.
			assertThat(reads.receive(client).data()).as("complete replies").isEqualTo(16);
			assertThat(client.serverClosed()).isTrue();
		}
	}

	static byte expected(long offset) {
		return (byte) ((offset % MIB) * 31 + offset / MIB);
	}

}
