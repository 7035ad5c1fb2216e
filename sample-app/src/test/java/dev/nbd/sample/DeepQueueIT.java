package dev.nbd.sample;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.protocol.NbdProtocol;
import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.PipelinedReads;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * Thousands of small READs queued on the memory export while the replies are backed up: a
 * backend that completes on the network thread must not make the server drain its queue by
 * recursion (one stack frame set per request), or the connection dies of a StackOverflowError.
 * The app runs with a 256 KiB thread stack; {@code DeepQueueTests} measures the stack depth in
 * process.
 */
class DeepQueueIT {

	private static final int READS = 60_000;

	private static final Pattern IN_FLIGHT = Pattern.compile("\"inFlight\":(\\d+)");

	private static final int LENGTH = 512;

	@TempDir
	Path data;

	@Test
	void thousandsOfQueuedSmallReadsAreAllAnswered() throws Exception {
		try (SampleAppProcess app = SampleAppProcess.startWithJvmOptions(this.data, List.of("-Xss256k"));
				RawNbdClient client = RawNbdClient.connect(app.nbdPort(), "mem")) {
			client.socket().setSoTimeout(60_000);
			// All requests in one write from another thread (the server stops reading while its
			// replies are backed up, so the write may block until we read); replies are read only
			// once the requests are out or stuck, so thousands wait in the server's queue.
			// All requests at once from another thread: the server stops reading while its replies
			// are backed up, so the write may block until we read.
			PipelinedReads reads = new PipelinedReads((offset) -> 0);
			CompletableFuture<Void> sent = reads.sendInBackground(client, READS, LENGTH);
			// Nobody reads the replies: they back up until the server stops dispatching, and the
			// requests decoded meanwhile (thousands, from one socket read) wait in its queue, as the
			// actuator shows.
			ActuatorClient actuator = new ActuatorClient(app.httpPort());
			await().atMost(Duration.ofSeconds(120))
				.until(() -> IN_FLIGHT.matcher(actuator.getOk("/actuator/nbd"))
					.results()
					.anyMatch((m) -> Integer.parseInt(m.group(1)) > 1));
			assertThat(reads.receive(client).data()).as("READs answered\n" + tail(app.log())).isEqualTo(READS);
			sent.get(60, TimeUnit.SECONDS);
			assertThat(client.call(NbdProtocol.CMD_READ, 0, 4096, null).error()).isZero();
			assertThat(app.log()).doesNotContain("StackOverflowError");
		}
	}

	private static String tail(String log) {
		return log.substring(Math.max(0, log.length() - 4000));
	}

}
