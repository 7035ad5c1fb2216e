package dev.nbd.server;

import java.time.Duration;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RecordingListener;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/** An Error that ends a connection is logged at WARN once per kind, counted, and harms no other client. */
@ExtendWith(OutputCaptureExtension.class)
class UnexpectedErrorTests {

	/** A listener with a bug: it throws an Error on every completed READ, in the request path. */
	@RegisterExtension
	final NbdServerExtension servers = NbdServerExtension.alsoReportingTo(new NbdServerListener() {

		@Override
		public void requestCompleted(Export export, String op, String outcome, long nanos, long bytes) {
			if (op.equals("read")) {
				throw new LinkageError("listener bug in the request path");
			}
		}

	});

	@Test
	void errorClosingAConnectionIsLoggedOncePerKindAndCounted(CapturedOutput output) throws Exception {
		RecordingListener recording = this.servers.listener();
		NbdServer server = this.servers.start(new MemoryBackend("mem", 1 << 20));
		for (int i = 1; i <= 3; i++) {
			try (RawNbdClient c = RawNbdClient.connect(server.port(), "mem", false, false)) {
				c.sendRequest(0, NbdProtocol.CMD_READ, 1, 0, 512, null);
				assertThat(c.closedByServer(30_000)).isTrue();
			}
			int expected = i;
			await().atMost(Duration.ofSeconds(30)).until(() -> recording.refusals("internal_error") == expected);
		}
		// Other requests on other connections still work.
		try (RawNbdClient c = RawNbdClient.connect(server.port(), "mem", false, false)) {
			c.sendRequest(0, NbdProtocol.CMD_WRITE, 2, 0, 4, new byte[] { 1, 2, 3, 4 });
			assertThat(c.readSimpleReply().error()).isZero();
		}
		this.servers.stopAll();
		assertThat(output.getAll().split("\n")).filteredOn(l -> l.contains("WARN") && l.contains("unexpected error"))
			.hasSize(1);
		assertThat(output.getAll()).contains("LinkageError: listener bug in the request path");
	}

}
