package dev.nbd.sample;

import java.io.IOException;
import java.net.SocketException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.assertj.core.api.SoftAssertions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.protocol.NbdProtocol;
import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.PipelinedReads;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * SIGTERM to the packaged app, the way a container runtime stops it, with a client whose
 * replies are backed up, a client still negotiating and a client arriving late. The app must
 * answer every request it received whole (data, or {@code NBD_ESHUTDOWN} for work not started),
 * answer the negotiating client {@code NBD_REP_ERR_SHUTDOWN}, refuse the newcomer, sync the disk
 * image after the signal (seen as an {@code fdatasync}/{@code fsync} system call under
 * {@code strace}, not inferred from the file, which the page cache would hold anyway) and exit
 * with the JVM's status for SIGTERM (143) within the shutdown phase.
 */
class GracefulShutdownIT {

	private static final int MIB = 1024 * 1024;

	private static final Duration PHASE_TIMEOUT = Duration.ofSeconds(30);

	/** {@code PID SECONDS.MICROS fdatasync(FD</path>) = 0} as written by strace -f -ttt -y. */
	private static final Pattern SYNC = Pattern
		.compile("^\\d+\\s+(\\d+\\.\\d+)\\s+(fdatasync|fsync)\\((\\d+)<([^>]*)>\\)\\s+=\\s+0");

	@TempDir
	Path data;

	static int pattern(long offset) {
		return (int) (offset * 13 + (offset >>> 20));
	}

	@Test
	void sigtermAnswersEveryRequestRefusesNewcomersAndSyncsTheDisk() throws Exception {
		Path strace = ExternalTool.require("strace");
		Path trace = this.data.resolve("strace.out");
		SampleAppProcess app = SampleAppProcess.startWrapped(this.data,
				List.of(strace.toString(), "-f", "--seccomp-bpf", "-ttt", "-y", "-e", "trace=fdatasync,fsync", "-o",
						trace.toString()),
				"--spring.lifecycle.timeout-per-shutdown-phase=" + PHASE_TIMEOUT.toSeconds() + "s",
				// The negotiating client waits through the whole test.
				"--nbd.server.handshake-timeout=10m");
		SoftAssertions softly = new SoftAssertions();
		double signalledAt;
		int exitCode;
		try (RawNbdClient reader = RawNbdClient.connect(app.nbdPort(), "disk");
				RawNbdClient negotiating = RawNbdClient.connect(app.nbdPort())) {
			reader.socket().setSoTimeout(120_000);
			// 16 MiB written (answered, never flushed by the client), then read back in 16 READs
			// the client does not read yet: their replies back up in the server.
			byte[] block = new byte[MIB];
			for (long base = 0; base < 16 * MIB; base += MIB) {
				for (int i = 0; i < MIB; i++) {
					block[i] = (byte) pattern(base + i);
				}
				assertThat(reader.call(NbdProtocol.CMD_WRITE, base, MIB, block).error()).isZero();
			}
			negotiating.handshake();
			PipelinedReads reads = new PipelinedReads(GracefulShutdownIT::pattern).send(reader, 16, MIB);

			signalledAt = System.currentTimeMillis() / 1000.0;
			CompletableFuture<Integer> exit = app.terminateAsync(PHASE_TIMEOUT.plusSeconds(30));
			await().atMost(Duration.ofSeconds(60)).until(() -> app.log().contains("NBD server draining"));

			softly.assertThat(RawNbdClient.refusesConnection(app.nbdPort())).as("a new connection during the drain is refused")
				.isTrue();
			softly.assertThat(optionReplyType(negotiating)).as("LIST from a client still negotiating")
				.isEqualTo(NbdProtocol.REP_ERR_SHUTDOWN);
			softly.assertThat(reads.receive(reader).answered()).as("READs answered whole\n%s", app.log()).isEqualTo(16);
			softly.assertThat(reader.serverClosed()).as("closed after the last reply").isTrue();
			exitCode = exit.get(PHASE_TIMEOUT.plusSeconds(60).toSeconds(), TimeUnit.SECONDS);
		}
		finally {
			app.close();
		}
		softly.assertThat(exitCode).as("exit code after SIGTERM\n" + app.log()).isEqualTo(143);
		List<Double> syncs = diskSyncs(trace);
		softly.assertThat(syncs).as("syncs of disk.img after SIGTERM at " + signalledAt + "\n" + Files.readString(trace))
			.anyMatch((at) -> at >= signalledAt);
		softly.assertAll();
	}

	/** Sends LIST; the type of the final reply, or 0 if the server closed instead. */
	private static int optionReplyType(RawNbdClient client) throws IOException {
		try {
			return client.request(NbdProtocol.OPT_LIST, new byte[0]).type();
		}
		catch (java.io.EOFException | SocketException ex) {
			return 0;
		}
	}

	/** Wall-clock times (seconds) of successful syncs of disk.img in the strace output. */
	private static List<Double> diskSyncs(Path trace) throws IOException {
		List<Double> syncs = new ArrayList<>();
		for (String line : Files.readAllLines(trace)) {
			Matcher m = SYNC.matcher(line);
			if (m.find() && m.group(4).endsWith("/disk.img")) {
				syncs.add(Double.parseDouble(m.group(1)));
			}
		}
		return syncs;
	}

}
