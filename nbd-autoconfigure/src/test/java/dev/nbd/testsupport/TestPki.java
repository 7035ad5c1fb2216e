package dev.nbd.testsupport;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigInteger;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.security.Signature;
import java.security.interfaces.ECPrivateKey;
import java.security.interfaces.ECPublicKey;
import java.security.spec.ECGenParameterSpec;
import java.time.Duration;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

/**
 * A throw-away certificate authority made in-process with the JDK alone (no {@code openssl}, so
 * no test depends on it): a CA, a server certificate for {@code localhost}/{@code 127.0.0.1} and
 * a client certificate, all P-256, as PEM files in the layout libnbd ({@code tls-certificates=DIR})
 * and qemu ({@code tls-creds-x509,dir=DIR}) read: {@code ca-cert.pem}, {@code client-cert.pem},
 * {@code client-key.pem}; the server side also has {@code server-cert.pem} and
 * {@code server-key.pem} (PKCS#8).
 */
public final class TestPki {

	/** Subject of the client certificate, as Java prints it (RFC 2253). */
	public static final String CLIENT_SUBJECT = "CN=nbd-test-client,O=nbd-tests";

	private static final String CA_SUBJECT = "/O=nbd-tests/CN=nbd-test-ca";

	private static final SecureRandom random = new SecureRandom();

	private final Path dir;

	private final KeyPair caKey;

	private TestPki(Path dir, KeyPair caKey) {
		this.dir = dir;
		this.caKey = caKey;
	}

	/** Makes the CA, a server and a client certificate in {@code dir}. */
	public static TestPki create(Path dir) {
		try {
			Files.createDirectories(dir);
			KeyPair caKey = newKey();
			byte[] ca = certificate(CA_SUBJECT, caKey, CA_SUBJECT, caKey,
					List.of(extension(BASIC_CONSTRAINTS, true, seq(bool(true))),
							extension(KEY_USAGE, true, bitString(1, 0x06)), // keyCertSign, cRLSign
							extension(SUBJECT_KEY_ID, false, octets(keyId(caKey)))));
			writePem(dir.resolve("ca-cert.pem"), "CERTIFICATE", ca);
			writePem(dir.resolve("ca-key.pem"), "PRIVATE KEY", pkcs8(caKey));
			TestPki pki = new TestPki(dir, caKey);
			pki.issue("server", "/O=nbd-tests/CN=localhost", "serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1");
			pki.issue("client", "/O=nbd-tests/CN=nbd-test-client", "clientAuth", null);
			return pki;
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	/**
	 * Issues {@code <name>-cert.pem} and {@code <name>-key.pem}, signed by this CA (or replaces
	 * them, for rotation).
	 * @param subject as openssl's {@code -subj} writes it, e.g. {@code /O=nbd-tests/CN=localhost}
	 * @param extendedKeyUsage {@code serverAuth} or {@code clientAuth}
	 * @param subjectAltName {@code subjectAltName=DNS:name,IP:address,...} or {@code null}
	 */
	public void issue(String name, String subject, String extendedKeyUsage, String subjectAltName) {
		try {
			KeyPair key = newKey();
			List<byte[]> extensions = new ArrayList<>();
			extensions.add(extension(BASIC_CONSTRAINTS, false, seq()));
			extensions.add(extension(KEY_USAGE, true, bitString(5, 0xa0))); // digitalSignature, keyEncipherment
			extensions.add(extension(EXT_KEY_USAGE, false,
					seq(oid("clientAuth".equals(extendedKeyUsage) ? CLIENT_AUTH : SERVER_AUTH))));
			extensions.add(extension(SUBJECT_KEY_ID, false, octets(keyId(key))));
			extensions.add(extension(AUTHORITY_KEY_ID, false, seq(tlv(0x80, keyId(this.caKey)))));
			if (subjectAltName != null) {
				extensions.add(extension(SUBJECT_ALT_NAME, false, subjectAltNames(subjectAltName)));
			}
			byte[] cert = certificate(subject, key, CA_SUBJECT, this.caKey, extensions);
			writePem(this.dir.resolve(name + "-key.new"), "PRIVATE KEY", pkcs8(key));
			writePem(this.dir.resolve(name + "-cert.new"), "CERTIFICATE", cert);
			// Key and certificate change together, each by an atomic rename.
			Files.move(this.dir.resolve(name + "-key.new"), this.dir.resolve(name + "-key.pem"),
					StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
			Files.move(this.dir.resolve(name + "-cert.new"), this.dir.resolve(name + "-cert.pem"),
					StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	public Path dir() {
		return this.dir;
	}

	public Path caCert() {
		return this.dir.resolve("ca-cert.pem");
	}

	public Path serverCert() {
		return this.dir.resolve("server-cert.pem");
	}

	public Path serverKey() {
		return this.dir.resolve("server-key.pem");
	}

	public Path clientCert() {
		return this.dir.resolve("client-cert.pem");
	}

	public Path clientKey() {
		return this.dir.resolve("client-key.pem");
	}

	/** A directory for libnbd/qemu clients: the CA, and the client certificate unless {@code withCert} is false. */
	public Path clientDir(Path target, boolean withCert) {
		try {
			Files.createDirectories(target);
			Files.copy(caCert(), target.resolve("ca-cert.pem"), StandardCopyOption.REPLACE_EXISTING);
			if (withCert) {
				Files.copy(clientCert(), target.resolve("client-cert.pem"), StandardCopyOption.REPLACE_EXISTING);
				Files.copy(clientKey(), target.resolve("client-key.pem"), StandardCopyOption.REPLACE_EXISTING);
			}
			return target;
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	/** Spring Boot PEM SSL bundle properties for the server side of this PKI. */
	public List<String> bundleProperties(String bundle) {
		String prefix = "spring.ssl.bundle.pem." + bundle + ".";
		return List.of(prefix + "keystore.certificate=file:" + serverCert(),
				prefix + "keystore.private-key=file:" + serverKey(), prefix + "truststore.certificate=file:" + caCert());
	}

	// X.509 (RFC 5280) in DER, just what these certificates need.

	private static final String ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";

	private static final String EC_PUBLIC_KEY = "1.2.840.10045.2.1";

	private static final String PRIME256V1 = "1.2.840.10045.3.1.7";

	private static final String BASIC_CONSTRAINTS = "2.5.29.19";

	private static final String KEY_USAGE = "2.5.29.15";

	private static final String EXT_KEY_USAGE = "2.5.29.37";

	private static final String SUBJECT_ALT_NAME = "2.5.29.17";

	private static final String SUBJECT_KEY_ID = "2.5.29.14";

	private static final String AUTHORITY_KEY_ID = "2.5.29.35";

	private static final String SERVER_AUTH = "1.3.6.1.5.5.7.3.1";

	private static final String CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

	private static KeyPair newKey() {
		try {
			KeyPairGenerator generator = KeyPairGenerator.getInstance("EC");
			generator.initialize(new ECGenParameterSpec("secp256r1"));
			return generator.generateKeyPair();
		}
		catch (GeneralSecurityException ex) {
			throw new IllegalStateException(ex);
		}
	}

	private static byte[] certificate(String subject, KeyPair subjectKey, String issuer, KeyPair issuerKey,
			List<byte[]> extensions) {
		ZonedDateTime now = ZonedDateTime.now(ZoneOffset.UTC);
		byte[] algorithm = seq(oid(ECDSA_WITH_SHA256));
		byte[] tbs = seq(tlv(0xa0, integer(BigInteger.valueOf(2))), integer(new BigInteger(63, random).add(BigInteger.ONE)),
				algorithm, name(issuer), seq(time(now.minus(Duration.ofHours(1))), time(now.plus(Duration.ofDays(2)))),
				name(subject), subjectKey.getPublic().getEncoded(), tlv(0xa3, seq(extensions.toArray(byte[][]::new))));
		try {
			Signature signature = Signature.getInstance("SHA256withECDSA");
			signature.initSign(issuerKey.getPrivate());
			signature.update(tbs);
			return seq(tbs, algorithm, bitString(0, signature.sign()));
		}
		catch (GeneralSecurityException ex) {
			throw new IllegalStateException(ex);
		}
	}

	/** {@code /O=a/CN=b}: RDNs in that order (Java prints them reversed: {@code CN=b,O=a}). */
	private static byte[] name(String subject) {
		List<byte[]> rdns = new ArrayList<>();
		for (String part : subject.substring(1).split("/")) {
			String[] kv = part.split("=", 2);
			String type = switch (kv[0]) {
				case "CN" -> "2.5.4.3";
				case "O" -> "2.5.4.10";
				case "OU" -> "2.5.4.11";
				default -> throw new IllegalArgumentException("attribute " + kv[0]);
			};
			rdns.add(tlv(0x31, seq(oid(type), tlv(0x0c, kv[1].getBytes(StandardCharsets.UTF_8)))));
		}
		return seq(rdns.toArray(byte[][]::new));
	}

	private static byte[] subjectAltNames(String text) throws IOException {
		List<byte[]> names = new ArrayList<>();
		for (String entry : text.substring(text.indexOf('=') + 1).split(",")) {
			String[] kv = entry.split(":", 2);
			names.add(switch (kv[0]) {
				case "DNS" -> tlv(0x82, kv[1].getBytes(StandardCharsets.US_ASCII));
				case "IP" -> tlv(0x87, InetAddress.getByName(kv[1]).getAddress());
				default -> throw new IllegalArgumentException("subjectAltName " + kv[0]);
			});
		}
		return seq(names.toArray(byte[][]::new));
	}

	private static byte[] extension(String oid, boolean critical, byte[] value) {
		return critical ? seq(oid(oid), bool(true), octets(value)) : seq(oid(oid), octets(value));
	}

	/**
	 * PKCS#8 with the public key inside the EC private key, as openssl writes it: GnuTLS (libnbd,
	 * qemu) cannot read the JDK's encoding, which leaves it out.
	 */
	private static byte[] pkcs8(KeyPair key) {
		ECPrivateKey privateKey = (ECPrivateKey) key.getPrivate();
		ECPublicKey publicKey = (ECPublicKey) key.getPublic();
		byte[] point = new byte[65];
		point[0] = 0x04;
		System.arraycopy(unsigned(publicKey.getW().getAffineX(), 32), 0, point, 1, 32);
		System.arraycopy(unsigned(publicKey.getW().getAffineY(), 32), 0, point, 33, 32);
		byte[] ecPrivateKey = seq(integer(BigInteger.ONE), octets(unsigned(privateKey.getS(), 32)),
				tlv(0xa1, bitString(0, point)));
		return seq(integer(BigInteger.ZERO), seq(oid(EC_PUBLIC_KEY), oid(PRIME256V1)), octets(ecPrivateKey));
	}

	private static byte[] unsigned(BigInteger value, int length) {
		byte[] bytes = value.toByteArray();
		byte[] out = new byte[length];
		int copy = Math.min(bytes.length, length);
		System.arraycopy(bytes, bytes.length - copy, out, length - copy, copy);
		return out;
	}

	private static byte[] keyId(KeyPair key) {
		try {
			return MessageDigest.getInstance("SHA-1").digest(key.getPublic().getEncoded());
		}
		catch (GeneralSecurityException ex) {
			throw new IllegalStateException(ex);
		}
	}

	private static byte[] time(ZonedDateTime time) {
		String text = time.format(DateTimeFormatter.ofPattern("yyMMddHHmmss")) + "Z";
		return tlv(0x17, text.getBytes(StandardCharsets.US_ASCII));
	}

	private static byte[] oid(String dotted) {
		String[] arcs = dotted.split("\\.");
		ByteArrayOutputStream out = new ByteArrayOutputStream();
		out.write(Integer.parseInt(arcs[0]) * 40 + Integer.parseInt(arcs[1]));
		for (int i = 2; i < arcs.length; i++) {
			long arc = Long.parseLong(arcs[i]);
			int groups = 1;
			while ((arc >> (7 * groups)) != 0) {
				groups++;
			}
			for (int g = groups - 1; g >= 0; g--) {
				out.write((int) ((arc >> (7 * g)) & 0x7f) | ((g > 0) ? 0x80 : 0));
			}
		}
		return tlv(0x06, out.toByteArray());
	}

	private static byte[] integer(BigInteger value) {
		return tlv(0x02, value.toByteArray());
	}

	private static byte[] bool(boolean value) {
		return tlv(0x01, new byte[] { (byte) (value ? 0xff : 0) });
	}

	private static byte[] octets(byte[] value) {
		return tlv(0x04, value);
	}

	private static byte[] bitString(int unusedBits, int oneByte) {
		return bitString(unusedBits, new byte[] { (byte) oneByte });
	}

	private static byte[] bitString(int unusedBits, byte[] bits) {
		byte[] content = new byte[bits.length + 1];
		content[0] = (byte) unusedBits;
		System.arraycopy(bits, 0, content, 1, bits.length);
		return tlv(0x03, content);
	}

	private static byte[] seq(byte[]... parts) {
		ByteArrayOutputStream out = new ByteArrayOutputStream();
		for (byte[] part : parts) {
			out.writeBytes(part);
		}
		return tlv(0x30, out.toByteArray());
	}

	private static byte[] tlv(int tag, byte[] content) {
		ByteArrayOutputStream out = new ByteArrayOutputStream();
		out.write(tag);
		int length = content.length;
		if (length < 0x80) {
			out.write(length);
		}
		else {
			int bytes = (32 - Integer.numberOfLeadingZeros(length) + 7) / 8;
			out.write(0x80 | bytes);
			for (int i = bytes - 1; i >= 0; i--) {
				out.write(length >> (8 * i));
			}
		}
		out.writeBytes(content);
		return out.toByteArray();
	}

	private static void writePem(Path file, String type, byte[] der) throws IOException {
		String base64 = Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII)).encodeToString(der);
		Files.writeString(file, "-----BEGIN " + type + "-----\n" + base64 + "\n-----END " + type + "-----\n");
	}

}
