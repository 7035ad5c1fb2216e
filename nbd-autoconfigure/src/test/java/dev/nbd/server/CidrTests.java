package dev.nbd.server;

import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatIllegalArgumentException;

class CidrTests {

	@Test
	void ipv4Blocks() throws Exception {
		Cidr net = Cidr.parse("10.1.0.0/16");
		assertThat(net.contains(InetAddress.getByName("10.1.255.7"))).isTrue();
		assertThat(net.contains(InetAddress.getByName("10.2.0.1"))).isFalse();
		assertThat(Cidr.parse("192.168.1.7").contains(InetAddress.getByName("192.168.1.7"))).isTrue();
		assertThat(Cidr.parse("192.168.1.7").contains(InetAddress.getByName("192.168.1.8"))).isFalse();
		assertThat(Cidr.parse("10.0.0.0/9").contains(InetAddress.getByName("10.127.0.1"))).isTrue();
		assertThat(Cidr.parse("10.0.0.0/9").contains(InetAddress.getByName("10.128.0.1"))).isFalse();
		assertThat(Cidr.parse("0.0.0.0/0").contains(InetAddress.getByName("203.0.113.9"))).isTrue();
	}

	@Test
	void ipv6BlocksAndMappedAddresses() throws Exception {
		Cidr net = Cidr.parse("fd00:1::/32");
		assertThat(net.contains(InetAddress.getByName("fd00:1:2::3"))).isTrue();
		assertThat(net.contains(InetAddress.getByName("fd00:2::3"))).isFalse();
		assertThat(Cidr.parse("::1").contains(InetAddress.getByName("::1"))).isTrue();
		// An IPv4 client seen through an IPv6 socket is matched against IPv4 blocks.
		assertThat(Cidr.parse("127.0.0.0/8").contains(InetAddress.getByName("::ffff:127.0.0.5"))).isTrue();
		assertThat(Cidr.parse("::1/128").contains(InetAddress.getByName("127.0.0.1"))).isFalse();
		assertThat(Cidr.parse("10.0.0.0/8").contains(InetAddress.getByName("::1"))).isFalse();
	}

	@Test
	void namesAndBadPrefixesAreRejected() {
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("localhost"))
			.withMessageContaining("host names are not accepted");
		// Names of hex digits only look like addresses to a pattern, but are names all the same.
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("cafe"));
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("bad.cafe/16"));
		// Legacy short IPv4 forms (1.2.3 = 1.2.0.3) are ambiguous in an allow-list.
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("10.1.2"));
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("10.0.0.0/33"));
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("::/129"));
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("10.0.0.0/x"));
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("::ffff:10.0.0.0/64"));
	}

	@Test
	void ipv4MappedBlocksMatchAsIpv4() throws Exception {
		Cidr net = Cidr.parse("::ffff:10.1.0.0/112");
		assertThat(net.contains(InetAddress.getByName("10.1.2.3"))).isTrue();
		assertThat(net.contains(InetAddress.getByName("10.2.0.1"))).isFalse();
	}

	/**
	 * A name that resolves (here through a hosts file given to a fresh JVM, the only way to
	 * observe a lookup without a network) is still refused: parsing never asks the resolver.
	 */
	@Test
	void parsingNeverResolvesNames(@TempDir Path dir) throws Exception {
		Path hosts = Files.writeString(dir.resolve("hosts"), "10.9.8.7 cafe\n127.0.0.1 localhost\n");
		String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
		Processes.Result result = Processes.run(Duration.ofSeconds(60), null, null,
				List.of(java, "-Djdk.net.hosts.file=" + hosts, "-cp", System.getProperty("java.class.path"),
						ParseInFreshJvm.class.getName(), "cafe"));
		assertThat(result.stdout().trim()).as(result.stderr()).startsWith("refused:");
	}

	/** Prints what parsing its argument gives, in a JVM whose resolver reads a test hosts file. */
	static final class ParseInFreshJvm {

		public static void main(String[] args) {
			// The resolver resolves the name: without this the test would prove nothing.
			try {
				InetAddress.getByName(args[0]);
			}
			catch (java.net.UnknownHostException ex) {
				System.out.println("unresolvable: " + ex);
				return;
			}
			try {
				System.out.println("parsed: " + Cidr.parse(args[0]));
			}
			catch (IllegalArgumentException ex) {
				System.out.println("refused: " + ex.getMessage());
			}
		}

	}

}
