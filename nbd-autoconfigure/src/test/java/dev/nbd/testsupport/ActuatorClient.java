package dev.nbd.testsupport;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

import tools.jackson.databind.JsonNode;
import tools.jackson.databind.json.JsonMapper;

/**
 * HTTP to an application's actuator on {@code 127.0.0.1:port}: the one client the tests use for
 * {@code /actuator/nbd}, {@code /actuator/prometheus} and the health groups, in-process or
 * against a started sample app. Timeouts are upper bounds only.
 */
public final class ActuatorClient {

	private static final JsonMapper json = JsonMapper.builder().build();

	private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();

	private final int port;

	public ActuatorClient(int port) {
		this.port = port;
	}

	public URI uri(String path) {
		return URI.create("http://127.0.0.1:" + this.port + path);
	}

	public HttpResponse<String> get(String path) {
		return send(HttpRequest.newBuilder(uri(path)).GET());
	}

	public HttpResponse<String> delete(String path) {
		return send(HttpRequest.newBuilder(uri(path)).DELETE());
	}

	/** The body of a GET that must answer 200, as JSON. */
	public JsonNode getJson(String path) {
		return json.readTree(getOk(path));
	}

	/** The body of a GET that must answer 200. */
	public String getOk(String path) {
		HttpResponse<String> response = get(path);
		if (response.statusCode() != 200) {
			throw new AssertionError("GET " + path + " answered " + response.statusCode() + ":\n" + response.body());
		}
		return response.body();
	}

	/** The Prometheus text exposition ({@code /actuator/prometheus}). */
	public String prometheus() {
		return getOk("/actuator/prometheus");
	}

	/** The status of a GET, or -1 if nothing answers (not yet listening, or gone). */
	public int status(String path) {
		try {
			return this.http.send(HttpRequest.newBuilder(uri(path)).timeout(Duration.ofSeconds(30)).build(),
					HttpResponse.BodyHandlers.discarding()).statusCode();
		}
		catch (IOException ex) {
			return -1;
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
			throw new AssertionError(ex);
		}
	}

	/** Parses a response body as JSON. */
	public static JsonNode json(HttpResponse<String> response) {
		return json.readTree(response.body());
	}

	private HttpResponse<String> send(HttpRequest.Builder request) {
		try {
			return this.http.send(request.timeout(Duration.ofSeconds(30)).build(), HttpResponse.BodyHandlers.ofString());
		}
		catch (IOException ex) {
			throw new AssertionError(request.build().method() + " " + request.build().uri() + " failed", ex);
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
			throw new AssertionError(ex);
		}
	}

}
