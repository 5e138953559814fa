package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/sigil-ws/sigil/client"
)

// Can tells in advance what the server's policy will refuse: the welcome
// carries the session's grants (spec.md §8.3). Under the default policy a
// user may post in rooms.> and read announce.>, but not post there.
func ExampleClient_Can() {
	url, stop := exampleServer()
	defer stop()
	c, err := client.Dial(context.Background(), url, &client.Options{Tokens: client.Password("alice", "pw")})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, ch := range []string{"rooms.lobby", "announce.news"} {
		fmt.Printf("pub %s: %v\n", ch, c.Can("pub", ch))
	}
	fmt.Println("dm:", c.Can("dm", ""))
	fmt.Println("greet.hello:", c.Can("greet.hello", ""))
	// Output:
	// pub rooms.lobby: true
	// pub announce.news: false
	// dm: true
	// greet.hello: true
}
