// Command project is the program the README's pipeline builds, tests in a
// container and ships.
package main

import "fmt"

func main() { fmt.Println("hello from project") }
