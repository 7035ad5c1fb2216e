package dev.nbd.sample;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.MultiConnProbe;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * SIGTERM while a client keeps many writes in flight on several connections: every write that
 * got a success reply is in the file afterwards, requests after the drain began fail with
 * {@code NBD_ESHUTDOWN} or end with the connection, and the process exits within the shutdown
 * phase timeout.
 */
class GracefulShutdownIT {

	private static final int BLOCK = 16384;

	/**
	 * Four connections, each keeping 16 writes in flight; block {@code n} holds {@code n} as
	 * little-endian longs. Prints READY after some successes, then at the end the blocks that
	 * succeeded and the errors seen.
	 */
	private static final String CLIENT = """
			import nbd, sys, threading, time, errno
			uri = sys.argv[1]
			N, DEPTH, B, PER = 4, 16, %d, 8192
			hs = []
			for _ in range(N):
			    h = nbd.NBD(); h.connect_uri(uri); hs.append(h)
			ok, errors, details, lock = [], {}, {}, threading.Lock()
			def error(e, where):
			    name = errno.errorcode.get(e.errnum, str(e.errnum))
			    with lock:
			        errors[name] = errors.get(name, 0) + 1
			        details.setdefault(name, where + ": " + str(e))
			def run(i):
			    h, inflight, b, end = hs[i], {}, i * PER, (i + 1) * PER
			    deadline = time.time() + 60
			    while time.time() < deadline:
			        try:
			            while len(inflight) < DEPTH and b < end:
			                buf = nbd.Buffer.from_bytearray(b.to_bytes(8, "little") * (B // 8))
			                inflight[h.aio_pwrite(buf, b * B)] = (b, buf)
			                b += 1
			            if not inflight:
			                return
			            h.poll(-1)
			        except nbd.Error as e:
			            if not h.aio_is_dead():
			                error(e, "issue/poll")
			        for c in list(inflight):
			            try:
			                if h.aio_command_completed(c):
			                    with lock:
			                        ok.append(inflight.pop(c)[0])
			            except nbd.Error as e:
			                inflight.pop(c)
			                error(e, "reply")
			        if h.aio_is_dead() or h.aio_is_closed():
			            return
			threads = [threading.Thread(target=run, args=(i,)) for i in range(N)]
			for t in threads:
			    t.start()
			while len(ok) < 400 and any(t.is_alive() for t in threads):
			    time.sleep(0.01)
			print("READY", flush=True)
			for t in threads:
			    t.join()
			print("OK", " ".join(map(str, ok)))
			print("ERRORS", " ".join("%%s=%%d" %% kv for kv in errors.items()))
			for name, d in details.items():
			    print("DETAIL", name, d)
			""".formatted(BLOCK);

	@TempDir
	Path data;

	@Test
	void everyAnsweredWriteSurvivesSigterm() throws Exception {
		MultiConnProbe.requireLibnbdPython();
		Duration phaseTimeout = Duration.ofSeconds(10);
		SampleAppProcess app = SampleAppProcess.start(this.data,
				"--spring.lifecycle.timeout-per-shutdown-phase=" + phaseTimeout.toSeconds() + "s");
		List<String> lines = new ArrayList<>();
		Process client = Processes.builder(List.of("/usr/bin/python3", "-c", CLIENT, app.uri("disk")))
			.redirectError(ProcessBuilder.Redirect.INHERIT)
			.start();
		try {
			BufferedReader out = new BufferedReader(new InputStreamReader(client.getInputStream(), StandardCharsets.UTF_8));
			assertThat(out.readLine()).as(app.log()).isEqualTo("READY");
			app.terminate(phaseTimeout);
			String line;
			while ((line = out.readLine()) != null) {
				lines.add(line);
			}
			assertThat(client.waitFor(60, TimeUnit.SECONDS)).isTrue();
		}
		finally {
			client.destroyForcibly();
			app.close();
		}
		String log = app.log();
		assertThat(log).contains("NBD server draining").contains("NBD server stopped");
		String okLine = lines.stream().filter(l -> l.startsWith("OK")).findFirst().orElseThrow();
		String errorLine = lines.stream().filter(l -> l.startsWith("ERRORS")).findFirst().orElseThrow();
		long[] answered = java.util.Arrays.stream(okLine.substring(2).trim().split(" "))
			.mapToLong(Long::parseLong)
			.toArray();
		assertThat(answered.length).isGreaterThanOrEqualTo(400);
		// What a client may see once the drain began: NBD_ESHUTDOWN replies, or the connection
		// going away (commands in flight at close fail with ENOTCONN; libnbd's own state errors
		// have no errno).
		for (String e : errorLine.substring(6).trim().split(" ")) {
			if (!e.isEmpty()) {
				assertThat(e.substring(0, e.indexOf('='))).as(String.join("\n", lines))
					.isIn(Set.of("ESHUTDOWN", "ENOTCONN", "ECONNRESET", "EPIPE", "0"));
			}
		}
		try (RandomAccessFile f = new RandomAccessFile(this.data.resolve("disk.img").toFile(), "r")) {
			byte[] block = new byte[BLOCK];
			for (long b : answered) {
				f.seek(b * BLOCK);
				f.readFully(block);
				ByteBuffer buf = ByteBuffer.wrap(block).order(ByteOrder.LITTLE_ENDIAN);
				for (int i = 0; i < BLOCK; i += 8) {
					if (buf.getLong(i) != b) {
						throw new AssertionError("block " + b + " answered but not in the file (" + errorLine + ")");
					}
				}
			}
		}
		System.out.println("SIGTERM drain: " + answered.length + " writes answered, " + errorLine);
		log.lines().filter(l -> l.contains("NBD server")).forEach(System.out::println);
	}

}
