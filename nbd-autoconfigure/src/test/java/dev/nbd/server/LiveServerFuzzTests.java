package dev.nbd.server;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.lifecycle.AfterContainer;
import net.jqwik.api.lifecycle.BeforeContainer;
import org.awaitility.Awaitility;
import org.slf4j.LoggerFactory;

import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.TestPki;
import io.netty.handler.ssl.SslContextBuilder;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Random and mutated streams (some with STARTTLS followed by garbage) against a running server
 * with TLS optional: each connection ends cleanly once the client stops, nothing reaches the end
 * of a pipeline unhandled, and a client connected all along keeps being served.
 */
class LiveServerFuzzTests {

	private static Path dir;

	private static NbdServer server;

	private static RawNbdClient bystander;

	private static ListAppender<ILoggingEvent> nettyWarnings;

	private static long cookie;

	@BeforeContainer
	static void start() throws Exception {
		dir = Files.createTempDirectory("nbd-fuzz");
		TestPki pki = TestPki.create(dir);
		var ssl = SslContextBuilder.forServer(pki.serverCert().toFile(), pki.serverKey().toFile()).build();
		server = new NbdServer(NbdServerConfig.builder()
			.port(0)
			.maxPayload(64 * 1024)
			.handshakeTimeout(Duration.ofSeconds(2))
			.tls(new TlsSettings(() -> ssl, false))
			.build(), List.of(new MemoryBackend("mem", 1 << 20), new MemoryBackend("ro", 1 << 20, null, true)),
				Map.of(), Map.of(), null);
		server.start();
		bystander = RawNbdClient.connect(server.port());
		bystander.handshake();
		bystander.go("mem");
		nettyWarnings = new ListAppender<>();
		nettyWarnings.start();
		for (String name : List.of("io.netty.channel.DefaultChannelPipeline", "io.netty.util.ResourceLeakDetector")) {
			((Logger) LoggerFactory.getLogger(name)).addAppender(nettyWarnings);
		}
	}

	@AfterContainer
	static void stop() throws IOException {
		for (String name : List.of("io.netty.channel.DefaultChannelPipeline", "io.netty.util.ResourceLeakDetector")) {
			((Logger) LoggerFactory.getLogger(name)).detachAppender(nettyWarnings);
		}
		bystander.close();
		server.stop();
		org.springframework.util.FileSystemUtils.deleteRecursively(dir);
	}

	@Property(tries = 100)
	void streamsEndCleanlyAndOthersAreStillServed(@ForAll("streams") byte[] stream) throws Exception {
		try (Socket s = new Socket()) {
			s.connect(new InetSocketAddress("127.0.0.1", server.port()), 5000);
			s.setSoTimeout(10_000);
			InputStream in = s.getInputStream();
			CompletableFuture<Boolean> closed = CompletableFuture.supplyAsync(() -> {
				try {
					byte[] sink = new byte[65536];
					while (in.read(sink) >= 0) {
						// Replies are not checked here, only that they end.
					}
					return true;
				}
				catch (IOException ex) {
					return true; // reset by the server
				}
			});
			try {
				s.getOutputStream().write(stream);
				s.shutdownOutput();
			}
			catch (IOException ex) {
				// The server may close first.
			}
			assertThat(closed.get(10, TimeUnit.SECONDS)).as("server closed the connection").isTrue();
		}
		awaitOnlyBystander();
		assertThat(nettyWarnings.list).as("exceptions or leaks reported by Netty").isEmpty();
		assertThat(roundTrip()).as("a connected client is still served").isTrue();
	}

	@Provide
	Arbitrary<byte[]> streams() {
		byte[] startTls = ProtocolFuzzTests.concat(List.of(new byte[] { 0, 0, 0, 3 },
				ProtocolFuzzTests.rawOption(NbdProtocol.OPT_STARTTLS, new byte[0])));
		Arbitrary<byte[]> garbageInTls = Arbitraries.bytes()
			.array(byte[].class)
			.ofMinSize(1)
			.ofMaxSize(4096)
			.map((g) -> ProtocolFuzzTests.concat(List.of(startTls, g)));
		return Arbitraries.oneOf(Arbitraries.bytes().array(byte[].class).ofMaxSize(4096),
				ProtocolFuzzTests.handshakeStreams(), ProtocolFuzzTests.transmissionStreams(), garbageInTls);
	}

	private static void awaitOnlyBystander() {
		Awaitility.await()
			.atMost(Duration.ofMinutes(1))
			.pollInterval(Duration.ofMillis(5))
			.untilAsserted(() -> assertThat(server.allConnections()).hasSize(1));
	}

	private static boolean roundTrip() throws IOException {
		long c = ++cookie;
		byte[] data = new byte[512];
		Arrays.fill(data, (byte) c);
		bystander.sendRequest(0, NbdProtocol.CMD_WRITE, c, 0, 512, data);
		if (bystander.readSimpleReply().error() != 0) {
			return false;
		}
		bystander.sendRequest(0, NbdProtocol.CMD_READ, c, 0, 512, null);
		RawNbdClient.SimpleReply reply = bystander.readSimpleReply();
		byte[] back = new byte[512];
		bystander.readFully(back);
		return reply.error() == 0 && reply.cookie() == c && Arrays.equals(back, data);
	}

}
