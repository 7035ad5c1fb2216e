package dev.nbd.server;

import java.net.InetAddress;

import org.junit.jupiter.api.Test;

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
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("localhost"));
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("10.0.0.0/33"));
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("::/129"));
		assertThatIllegalArgumentException().isThrownBy(() -> Cidr.parse("10.0.0.0/x"));
	}

}
